package providers

import (
	"encoding/json"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// Sentiment labels, the same whichever provider answered.
const (
	Positive = "positive"
	Negative = "negative"
	Neutral  = "neutral"
)

// sentimentSystem asks a chat model for an answer the router can read.
const sentimentSystem = `You classify the sentiment of the user's text. Answer with JSON only, no prose and no code fence: ` +
	`{"label": "positive" | "negative" | "neutral", "score": <your confidence from 0 to 1>}`

var (
	starLabel  = regexp.MustCompile(`^([1-5])\s*stars?$`)
	indexLabel = regexp.MustCompile(`^label_(\d+)$`)
)

// NormaliseScores turns a classifier's labels and scores into one of
// positive, negative or neutral and a confidence in [0, 1]. It understands
// POSITIVE/NEGATIVE/NEUTRAL and their POS/NEG/NEU short forms, LABEL_0..2
// (two labels: negative, positive; three: negative, neutral, positive) and
// star ratings (1–2 negative, 3 neutral, 4–5 positive). Scores of labels
// meaning the same are added, so "4 stars" and "5 stars" both count for
// positive. It reports false when no label is understood.
func NormaliseScores(scores []LabelScore) (label string, score float64, ok bool) {
	indexed := 0
	for _, s := range scores {
		if indexLabel.MatchString(strings.ToLower(strings.TrimSpace(s.Label))) {
			indexed++
		}
	}
	sums := map[string]float64{}
	for _, s := range scores {
		l := mapLabel(s.Label, indexed)
		if l == "" || math.IsNaN(s.Score) {
			continue
		}
		sums[l] += s.Score
	}
	best := -1.0
	for _, l := range []string{Negative, Neutral, Positive} { // fixed order: ties are stable
		if v, ok := sums[l]; ok && v > best {
			label, best = l, v
		}
	}
	if label == "" {
		return "", 0, false
	}
	return label, clamp01(best), true
}

// mapLabel maps one classifier label; indexed is how many LABEL_n labels
// the answer has, which decides what LABEL_1 means.
func mapLabel(raw string, indexed int) string {
	l := strings.ToLower(strings.TrimSpace(raw))
	switch l {
	case "positive", "pos", "label_positive", "joy", "happy":
		return Positive
	case "negative", "neg", "label_negative", "sad", "anger":
		return Negative
	case "neutral", "neu", "label_neutral", "mixed":
		return Neutral
	}
	if m := starLabel.FindStringSubmatch(l); m != nil {
		switch m[1] {
		case "1", "2":
			return Negative
		case "3":
			return Neutral
		default:
			return Positive
		}
	}
	if m := indexLabel.FindStringSubmatch(l); m != nil {
		i, _ := strconv.Atoi(m[1])
		switch {
		case indexed == 2 && i == 0:
			return Negative
		case indexed == 2 && i == 1:
			return Positive
		case indexed == 3:
			return [...]string{Negative, Neutral, Positive, ""}[min(i, 3)]
		}
	}
	return ""
}

// ParseSentimentText reads a chat model's sentiment answer: the JSON it was
// asked for, possibly in a code fence or amid prose, with "label" or
// "sentiment" and "score" or "confidence" (a number, a numeric string or a
// percentage). Without readable JSON, a text naming exactly one of the
// three labels counts, with score 0.5 (confidence unknown). It reports
// false for anything else, which the router treats as a malformed answer.
func ParseSentimentText(text string) (label string, score float64, ok bool) {
	if i, j := strings.Index(text, "{"), strings.LastIndex(text, "}"); i >= 0 && j > i {
		var m map[string]any
		if json.Unmarshal([]byte(text[i:j+1]), &m) == nil {
			var l string
			for _, k := range []string{"label", "sentiment", "class"} {
				if s, ok := m[k].(string); ok {
					l = mapLabel(s, 0)
					break
				}
			}
			if l != "" {
				score := 0.5
				for _, k := range []string{"score", "confidence", "probability"} {
					if f, ok := number(m[k]); ok {
						score = f
						break
					}
				}
				return l, normaliseConfidence(score), true
			}
		}
	}
	lower := strings.ToLower(text)
	found := ""
	for _, l := range []string{Positive, Negative, Neutral} {
		if strings.Contains(lower, l) {
			if found != "" {
				return "", 0, false
			}
			found = l
		}
	}
	if found == "" {
		return "", 0, false
	}
	return found, 0.5, true
}

func number(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case string:
		x = strings.TrimSpace(x)
		pct := strings.HasSuffix(x, "%")
		f, err := strconv.ParseFloat(strings.TrimSuffix(x, "%"), 64)
		if err != nil {
			return 0, false
		}
		if pct {
			f /= 100
		}
		return f, true
	}
	return 0, false
}

// normaliseConfidence maps what models write as confidence into [0, 1]: a
// polarity in [-1, 0) by its size, a percentage by a hundredth.
func normaliseConfidence(f float64) float64 {
	f = math.Abs(f)
	if f > 1 && f <= 100 {
		f /= 100
	}
	return clamp01(f)
}

func clamp01(f float64) float64 {
	if math.IsNaN(f) {
		return 0
	}
	return math.Round(min(max(f, 0), 1)*1e4) / 1e4
}
