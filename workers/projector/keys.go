package projector

import (
	"math"
	"strconv"
	"strings"
	"time"
)

// Key layout, every key under prefix + "dash:" (ns below). User and
// workflow ids are server-made ULIDs, without ':', so the layout is
// unambiguous; the execution id, which a client may choose, is always last.
//
//	ns+"marker"              string: set when the counters were (re)built from the stream
//	ns+"lock"                string: held by the projector rebuilding, with a TTL
//	ns+"p:"+exec             string: phase of one open execution, "user|workflow|q|s|t|,node,", TTL
//	ns+"d"+width+":"+start   hash: exec → phase of an ended execution, last written in the
//	                               DoneTTL-wide bucket of time from start (Unix seconds, width
//	                               in seconds: projectors of another DoneTTL never share one), expires
//	ns+"u:"+user             hash: total queued running completed failed cancelled
//	                               rejected nodes nt:<type> ns:<status> dsum dn
//	ns+"wfs:"+user           set: workflow ids the user ran
//	ns+"w:"+user+":"+wf      hash: total completed failed cancelled rejected dsum dn h<bucket>
//	ns+"m:"+user+":"+minute  hash: n completed failed cancelled dsum dn h<bucket>, expires
//
// dsum is in microseconds (HINCRBY keeps it exact); minute is Unix time / 60.
type keys struct{ ns string }

func newKeys(prefix string) keys { return keys{ns: prefix + "dash:"} }

func (k keys) marker() string           { return k.ns + "marker" }
func (k keys) lock() string             { return k.ns + "lock" }
func (k keys) phase(exec string) string { return k.ns + "p:" + exec }
func (k keys) ended(width, start int64) string {
	return k.ns + "d" + strconv.FormatInt(width, 10) + ":" + strconv.FormatInt(start, 10)
}
func (k keys) user(u string) string        { return k.ns + "u:" + u }
func (k keys) workflows(u string) string   { return k.ns + "wfs:" + u }
func (k keys) workflow(u, w string) string { return k.ns + "w:" + u + ":" + w }
func (k keys) minute(u string, m int64) string {
	return k.ns + "m:" + u + ":" + strconv.FormatInt(m, 10)
}

// pattern matches every key of the projector, for a rebuild's sweep; glob
// characters in the prefix are escaped so that a sweep never reaches
// another tenant's keys.
func (k keys) pattern() string {
	var b strings.Builder
	for _, r := range k.ns {
		switch r {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('*')
	return b.String()
}

// minuteOf is the per-minute bucket a time falls in.
func minuteOf(t time.Time) int64 { return t.Unix() / 60 }

// Histogram: four buckets per doubling of the duration. Bucket i holds
// durations in [2^((i-histOffset)/4), 2^((i-histOffset+1)/4)) ms; the
// first and last buckets also hold everything below and above.
const (
	histPerOctave = 4
	histMinExp    = -4 // 1/16 ms
	histMaxExp    = 27 // 2^27 ms, about 37 hours
	histOffset    = -histMinExp * histPerOctave
	histBuckets   = (histMaxExp - histMinExp) * histPerOctave
)

// bucketOf is the histogram bucket of a duration in milliseconds.
func bucketOf(ms float64) int {
	if ms <= 0 {
		return 0
	}
	i := int(math.Floor(math.Log2(ms)*histPerOctave)) + histOffset
	return min(max(i, 0), histBuckets-1)
}

// histFields are the hash fields of the buckets, "h0" to "h123".
var histFields = func() (f [histBuckets]string) {
	for i := range f {
		f[i] = "h" + strconv.Itoa(i)
	}
	return f
}()

// histField is the hash field of bucket i.
func histField(i int) string { return histFields[i] }

// bucketMid is the value a bucket stands for: its geometric midpoint, so
// the relative error is the same (at most 2^(1/8)-1, 9.1 %) on both sides.
func bucketMid(i int) float64 {
	return math.Exp2((float64(i-histOffset) + 0.5) / histPerOctave)
}

// histogram is a sparse set of bucket counts.
type histogram map[int]int64

// add merges the h<bucket> fields of a hash.
func (h histogram) add(fields map[string]string) {
	for f, v := range fields {
		if len(f) < 2 || f[0] != 'h' {
			continue
		}
		i, err := strconv.Atoi(f[1:])
		if err != nil {
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		h[i] += n
	}
}

// quantile estimates the q-th quantile (0 < q <= 1) by nearest rank; 0
// when the histogram is empty.
func (h histogram) quantile(q float64) float64 {
	var total int64
	for _, n := range h {
		total += n
	}
	if total == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(total)))
	rank = max(rank, 1)
	var seen int64
	for i := 0; i < histBuckets; i++ {
		seen += h[i]
		if seen >= rank {
			return round3(bucketMid(i))
		}
	}
	return round3(bucketMid(histBuckets - 1))
}

// round3 rounds to the microsecond: finer digits are noise in JSON.
func round3(v float64) float64 { return math.Round(v*1000) / 1000 }
