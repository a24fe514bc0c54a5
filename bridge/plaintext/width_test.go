package plaintext

import "testing"

func TestDisplayWidth(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{
		{"", 0},
		{"abc", 3},
		{"中文", 4},
		{"，。", 4},
		{"Ａ", 2},
		{"한국", 4},
		{"ｶﾀｶﾅ", 4}, // halfwidth katakana
		{"🍌", 2},
		{"👨‍👩‍👧", 2}, // ZWJ sequence
		{"🇨🇳", 2},    // flag: two regional indicators
		{"🇨🇳🇺🇸", 4},
		{"❤️", 2}, // narrow heart + VS16
		{"👍🏽", 2}, // skin tone modifier
		{"é", 1},  // e + combining acute
		{"a\tb", 2},
		{"✅ ok", 5},
		{"·—", 2},
	}
	for _, tt := range tests {
		if got := displayWidth(tt.in); got != tt.want {
			t.Errorf("displayWidth(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestIsCJK(t *testing.T) {
	tests := []struct {
		r    rune
		want bool
	}{
		{'a', false},
		{'：', true},
		{'。', true},
		{'中', true},
		{'か', true},
		{'한', true},
		{'“', false}, // ambiguous width, used by Western text too
		{'🍌', false},
		{'✅', false},
	}
	for _, tt := range tests {
		if got := isCJK(tt.r); got != tt.want {
			t.Errorf("isCJK(%q) = %v, want %v", tt.r, got, tt.want)
		}
	}
}
