package providers

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNormaliseScores(t *testing.T) {
	t.Parallel()
	ls := func(pairs ...any) []LabelScore {
		var out []LabelScore
		for i := 0; i < len(pairs); i += 2 {
			out = append(out, LabelScore{Label: pairs[i].(string), Score: pairs[i+1].(float64)})
		}
		return out
	}
	cases := []struct {
		name   string
		scores []LabelScore
		label  string
		score  float64
		ok     bool
	}{
		{"upper case", ls("POSITIVE", 0.9, "NEGATIVE", 0.1), Positive, 0.9, true},
		{"lower case three way", ls("negative", 0.7, "neutral", 0.2, "positive", 0.1), Negative, 0.7, true},
		{"short forms", ls("NEU", 0.5, "POS", 0.3, "NEG", 0.2), Neutral, 0.5, true},
		{"LABEL_n of three", ls("LABEL_0", 0.1, "LABEL_1", 0.2, "LABEL_2", 0.7), Positive, 0.7, true},
		{"LABEL_1 of three is neutral", ls("LABEL_1", 0.6, "LABEL_0", 0.3, "LABEL_2", 0.1), Neutral, 0.6, true},
		{"LABEL_n of two", ls("LABEL_1", 0.8, "LABEL_0", 0.2), Positive, 0.8, true},
		{"LABEL_0 of two", ls("LABEL_0", 0.8, "LABEL_1", 0.2), Negative, 0.8, true},
		{"stars add up", ls("5 stars", 0.3, "4 stars", 0.3, "1 star", 0.35, "3 stars", 0.05), Positive, 0.6, true},
		{"one star", ls("1 star", 0.9, "5 stars", 0.1), Negative, 0.9, true},
		{"three stars", ls("3 stars", 0.9), Neutral, 0.9, true},
		{"unknown labels ignored", ls("surprise", 0.9, "positive", 0.1), Positive, 0.1, true},
		{"nothing understood", ls("surprise", 0.9), "", 0, false},
		{"empty", nil, "", 0, false},
		{"score clamped", ls("positive", 1.7), Positive, 1, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			label, score, ok := NormaliseScores(tc.scores)
			require.Equal(t, tc.ok, ok)
			require.Equal(t, tc.label, label)
			require.InDelta(t, tc.score, score, 1e-9)
		})
	}
}

func TestParseSentimentText(t *testing.T) {
	t.Parallel()
	cases := []struct {
		text  string
		label string
		score float64
		ok    bool
	}{
		{`{"label":"positive","score":0.93}`, Positive, 0.93, true},
		{"```json\n{\"label\": \"NEGATIVE\", \"score\": 0.8}\n```", Negative, 0.8, true},
		{`Here you go: {"sentiment": "neutral", "confidence": "75%"} hope it helps`, Neutral, 0.75, true},
		{`{"label":"negative","score":-0.6}`, Negative, 0.6, true},
		{`{"label":"positive","score":87}`, Positive, 0.87, true},
		{`{"label":"positive"}`, Positive, 0.5, true},
		{`{"label":"mixed","score":0.4}`, Neutral, 0.4, true},
		{"Positive.", Positive, 0.5, true},
		{"It is not positive nor negative", "", 0, false},
		{"no idea", "", 0, false},
		{`{"label":"great"}`, "", 0, false},
		{"", "", 0, false},
	}
	for _, tc := range cases {
		label, score, ok := ParseSentimentText(tc.text)
		require.Equal(t, tc.ok, ok, tc.text)
		require.Equal(t, tc.label, label, tc.text)
		require.InDelta(t, tc.score, score, 1e-9, tc.text)
	}
}

func FuzzParseSentimentText(f *testing.F) {
	for _, s := range []string{`{"label":"positive","score":0.9}`, "neutral", "```{}```", `{"score":"1e400%"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		label, score, ok := ParseSentimentText(s)
		if ok {
			require.Contains(t, []string{Positive, Negative, Neutral}, label)
			require.True(t, score >= 0 && score <= 1, score)
		}
	})
}

func TestParseClassification(t *testing.T) {
	t.Parallel()
	got, err := parseClassification([]byte(`[{"label":"POSITIVE","score":0.9}]`))
	require.NoError(t, err)
	require.Equal(t, []LabelScore{{"POSITIVE", 0.9}}, got)
	_, err = parseClassification([]byte(`{"error":"loading"}`))
	require.Error(t, err)
	_, err = parseClassification([]byte(`[[]]`))
	require.Error(t, err)
}
