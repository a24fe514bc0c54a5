package plaintext

import "testing"

func TestAppendUnescaped(t *testing.T) {
	tests := []struct{ in, want string }{
		{`plain`, `plain`},
		{`\*`, `*`},
		{`\a`, `\a`},
		{`\\`, `\`},
		{`a\`, `a\`},
		{`&amp;`, `&`},
		{`&lt;script&gt;`, `<script>`},
		{`&#0;`, "\uFFFD"},
		{`&#x110000;`, "\uFFFD"},
		{`&#x4e2d;&#X6587;`, "中文"},
		{`&#1234567;`, "\uFFFD"},
		{`&#12345678;`, `&#12345678;`},
		{`&#x1234567;`, `&#x1234567;`},
		{`&#;`, `&#;`},
		{`&;`, `&;`},
		{`&amp`, `&amp`},
		{`a&b`, `a&b`},
		{`&nosuch;`, `&nosuch;`},
		{`\&amp;`, `&amp;`},
		{`&`, `&`},
		{`&#x`, `&#x`},
	}
	for _, tt := range tests {
		if got := string(appendUnescaped(nil, []byte(tt.in))); got != tt.want {
			t.Errorf("appendUnescaped(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
