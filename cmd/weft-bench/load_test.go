package main

import (
	"encoding/json"
	"testing"
)

// TestSeedBody: the hand-built body reads back as the request it stands
// for.
func TestSeedBody(t *testing.T) {
	got := seedBody([]byte("stale"), "01JABCDEF", "weft bench 3 17", 7)[len("stale"):]
	var req struct {
		WorkflowID string `json:"workflowId"`
		Inputs     struct {
			Text string  `json:"text"`
			N    float64 `json:"n"`
		} `json:"inputs"`
	}
	if err := json.Unmarshal(got, &req); err != nil {
		t.Fatalf("%s: %v", got, err)
	}
	if req.WorkflowID != "01JABCDEF" || req.Inputs.Text != "weft bench 3 17" || req.Inputs.N != 7 {
		t.Fatalf("%s reads back as %+v", got, req)
	}
}
