package projector

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/weftdev/weft/events"
)

func BenchmarkZZDecode(b *testing.B) {
	x := exec{id: "01jabcdefghjkmnpqrstvwxyz0", user: "01juserabcdefghjkmnpqrstvw", wf: "01jwfabcdefghjkmnpqrstvwxy", at: time.Now()}
	small := x.end(events.KindCompleted, 12.5, node("c", "HTTP", "completed"), node("d", "OUTPUT", "completed"))
	big := small
	big.Execution = json.RawMessage(`{"id":"x","output":{"text":"` + strings.Repeat("lorem ipsum ", 200) + `"},"nodes":{}}`)
	q := x.ev(events.KindQueued)
	for name, ev := range map[string]events.Event{"queued": q, "terminal-small": small, "terminal-2.5KB": big} {
		data, _ := json.Marshal(ev)
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				var w wireEvent
				if err := json.Unmarshal(data, &w); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
