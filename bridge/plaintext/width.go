package plaintext

import "unicode"

// runeRange is an inclusive range of code points.
type runeRange struct{ lo, hi rune }

// wideRanges lists code points that terminals and most chat fonts draw two
// columns wide: East Asian Wide (W) and Fullwidth (F) characters from
// Unicode's EastAsianWidth.txt, condensed to the blocks that occur in real
// answers (CJK, kana, Hangul, fullwidth forms, CJK punctuation) plus the
// emoji that have default emoji presentation. Sorted, non-overlapping.
var wideRanges = [...]runeRange{
	{0x1100, 0x115F},   // Hangul Jamo initial consonants
	{0x231A, 0x231B},   // ⌚⌛
	{0x2329, 0x232A},   // 〈〉
	{0x23E9, 0x23EC},   // ⏩..⏬
	{0x23F0, 0x23F0},   // ⏰
	{0x23F3, 0x23F3},   // ⏳
	{0x25FD, 0x25FE},   // ◽◾
	{0x2614, 0x2615},   // ☔☕
	{0x2648, 0x2653},   // zodiac
	{0x267F, 0x267F},   // ♿
	{0x2693, 0x2693},   // ⚓
	{0x26A1, 0x26A1},   // ⚡
	{0x26AA, 0x26AB},   // ⚪⚫
	{0x26BD, 0x26BE},   // ⚽⚾
	{0x26C4, 0x26C5},   // ⛄⛅
	{0x26CE, 0x26CE},   // ⛎
	{0x26D4, 0x26D4},   // ⛔
	{0x26EA, 0x26EA},   // ⛪
	{0x26F2, 0x26F3},   // ⛲⛳
	{0x26F5, 0x26F5},   // ⛵
	{0x26FA, 0x26FA},   // ⛺
	{0x26FD, 0x26FD},   // ⛽
	{0x2705, 0x2705},   // ✅
	{0x270A, 0x270B},   // ✊✋
	{0x2728, 0x2728},   // ✨
	{0x274C, 0x274C},   // ❌
	{0x274E, 0x274E},   // ❎
	{0x2753, 0x2755},   // ❓❔❕
	{0x2757, 0x2757},   // ❗
	{0x2795, 0x2797},   // ➕➖➗
	{0x27B0, 0x27B0},   // ➰
	{0x27BF, 0x27BF},   // ➿
	{0x2B1B, 0x2B1C},   // ⬛⬜
	{0x2B50, 0x2B50},   // ⭐
	{0x2B55, 0x2B55},   // ⭕
	{0x2E80, 0x303E},   // CJK radicals, Kangxi, CJK symbols and punctuation
	{0x3041, 0x33FF},   // kana, bopomofo, Hangul compatibility jamo, CJK compatibility
	{0x3400, 0x4DBF},   // CJK extension A
	{0x4E00, 0x9FFF},   // CJK unified ideographs
	{0xA000, 0xA4CF},   // Yi
	{0xA960, 0xA97F},   // Hangul Jamo extended-A
	{0xAC00, 0xD7A3},   // Hangul syllables
	{0xF900, 0xFAFF},   // CJK compatibility ideographs
	{0xFE10, 0xFE19},   // vertical forms
	{0xFE30, 0xFE6F},   // CJK compatibility forms, small form variants
	{0xFF00, 0xFF60},   // fullwidth ASCII and punctuation
	{0xFFE0, 0xFFE6},   // fullwidth signs
	{0x1B000, 0x1B2FF}, // kana supplement and extensions
	{0x1F004, 0x1F004}, // 🀄
	{0x1F0CF, 0x1F0CF}, // 🃏
	{0x1F18E, 0x1F18E}, // 🆎
	{0x1F191, 0x1F19A}, // 🆑..🆚
	{0x1F200, 0x1F2FF}, // enclosed ideographic supplement
	{0x1F300, 0x1F64F}, // misc symbols and pictographs, emoticons
	{0x1F680, 0x1F6FF}, // transport and map symbols
	{0x1F7E0, 0x1F7F0}, // coloured circles and squares
	{0x1F900, 0x1F9FF}, // supplemental symbols and pictographs
	{0x1FA70, 0x1FAFF}, // symbols and pictographs extended-A
	{0x20000, 0x2FFFD}, // CJK extensions B..F, compatibility supplement
	{0x30000, 0x3FFFD}, // CJK extensions G..
}

// inRanges reports whether r lies in one of the sorted ranges.
func inRanges(r rune, ranges []runeRange) bool {
	lo, hi := 0, len(ranges)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		switch {
		case r < ranges[m].lo:
			hi = m
		case r > ranges[m].hi:
			lo = m + 1
		default:
			return true
		}
	}
	return false
}

// isZeroWidth reports whether r takes no column of its own: controls,
// combining marks, zero-width spaces and joiners, and variation selectors.
func isZeroWidth(r rune) bool {
	switch {
	case r < 0x20 || (r >= 0x7F && r < 0xA0):
		return true
	case r < 0x300:
		return false
	case r >= 0x200B && r <= 0x200F, r >= 0x2060 && r <= 0x2064, r == 0xFEFF:
		return true
	case r >= 0xFE00 && r <= 0xFE0F, r >= 0xE0100 && r <= 0xE01EF:
		return true
	}
	return unicode.In(r, unicode.Mn, unicode.Me)
}

// runeWidth returns the number of columns r occupies: 0, 1 or 2.
func runeWidth(r rune) int {
	if r < 0x1100 {
		if isZeroWidth(r) {
			return 0
		}
		return 1
	}
	if r >= 0x1F3FB && r <= 0x1F3FF { // skin tones sit inside a wide block
		return 0
	}
	if inRanges(r, wideRanges[:]) {
		return 2
	}
	if isZeroWidth(r) {
		return 0
	}
	return 1
}

// isCJK reports whether r is a wide East Asian letter or punctuation mark
// (not an emoji). Used by the emphasis parser, where such characters act
// like word boundaries.
func isCJK(r rune) bool {
	if r < 0x1100 || (r >= 0x2300 && r < 0x2E80) || (r >= 0x1F000 && r < 0x20000) {
		return false
	}
	return inRanges(r, wideRanges[:])
}

// displayWidth returns the number of monospace columns s occupies, counting
// CJK and emoji as two. Emoji ZWJ sequences and flag pairs count as one
// emoji; a narrow symbol followed by VS16 (U+FE0F, emoji presentation)
// counts as two.
func displayWidth(s string) int {
	w := 0
	prev := rune(-1)
	prevW := 0
	regional := false // an odd regional indicator is pending
	for _, r := range s {
		cw := runeWidth(r)
		switch {
		case prev == 0x200D: // joined onto the previous emoji
			cw = 0
		case r == 0xFE0F && prevW == 1:
			cw = 1
		case r >= 0x1F1E6 && r <= 0x1F1FF:
			if regional {
				cw = 0
			} else {
				cw = 2
			}
			regional = !regional
		}
		if r < 0x1F1E6 || r > 0x1F1FF {
			regional = false
		}
		w += cw
		prev, prevW = r, cw
	}
	return w
}
