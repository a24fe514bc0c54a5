package aibot_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/wecom-bridge/wecom-bridge/wecom"
	"github.com/wecom-bridge/wecom-bridge/wecom/aibot"
)

func encryptMediaIndependently(plain, key []byte) []byte {
	pad := 32 - len(plain)%32
	buf := append(append([]byte(nil), plain...), bytes.Repeat([]byte{byte(pad)}, pad)...)
	block, _ := aes.NewCipher(key)
	cipher.NewCBCEncrypter(block, key[:16]).CryptBlocks(buf, buf)
	return buf
}

func TestDecryptMedia(t *testing.T) {
	key := []byte("0123456789abcdef0123456789ABCDEF")
	padded := base64.StdEncoding.EncodeToString(key)
	raw := base64.RawStdEncoding.EncodeToString(key)
	for _, n := range []int{0, 1, 15, 16, 17, 31, 32, 33, 1000} {
		plain := bytes.Repeat([]byte{0xA5}, n)
		for i := range plain {
			plain[i] = byte(i * 7)
		}
		ct := encryptMediaIndependently(plain, key)
		for _, k := range []string{padded, raw} {
			got, err := aibot.DecryptMedia(ct, k)
			if err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("n=%d key %q: %v", n, k, err)
			}
		}
		ours, err := aibot.EncryptMedia(plain, padded)
		if err != nil || !bytes.Equal(ours, ct) {
			t.Fatalf("EncryptMedia n=%d differs from the reference", n)
		}
	}
	// A 17..32 pad is legitimate: 16-byte unpadders reject it.
	ct := encryptMediaIndependently([]byte("x"), key)
	if got, err := aibot.DecryptMedia(ct, padded); err != nil || string(got) != "x" {
		t.Fatalf("pad 31: %q %v", got, err)
	}
	other := base64.StdEncoding.EncodeToString([]byte("ffffffffffffffffffffffffffffffff"))
	for name, tc := range map[string]struct {
		data []byte
		key  string
	}{
		"wrong key":    {encryptMediaIndependently([]byte("hello world"), key), other},
		"empty":        {nil, padded},
		"not a block":  {make([]byte, 17), padded},
		"short key":    {ct, base64.StdEncoding.EncodeToString(key[:16])},
		"not base64":   {ct, "!!!"},
		"padding zero": {encryptRaw(make([]byte, 32), key), padded},
	} {
		if _, err := aibot.DecryptMedia(tc.data, tc.key); !errors.Is(err, wecom.ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func encryptRaw(b, key []byte) []byte {
	out := append([]byte(nil), b...)
	block, _ := aes.NewCipher(key)
	cipher.NewCBCEncrypter(block, key[:16]).CryptBlocks(out, out)
	return out
}

func TestMediaFilename(t *testing.T) {
	for in, want := range map[string]string{
		`attachment; filename*=UTF-8''%E5%B9%B4%E5%81%87%E5%88%B6%E5%BA%A6.pdf`:         "年假制度.pdf",
		`attachment; filename="fallback.pdf"; filename*=UTF-8''%E6%8A%A5%E5%91%8A.docx`: "报告.docx",
		`attachment; filename="report 2024.xlsx"`:                                       "report 2024.xlsx",
		`attachment; filename=plain.txt`:                                                "plain.txt",
		`attachment; filename="%E4%B8%AD%E6%96%87.png"`:                                 "中文.png",
		`attachment; filename="../../etc/passwd"`:                                       "passwd",
		`attachment; filename="C:\\Users\\x\\evil.exe"`:                                 "evil.exe",
		`attachment; filename=中文 名.txt; size=3`:                                         "中文",
		`inline`:                                 "",
		``:                                       "",
		`attachment; filename=".."`:              "",
		`attachment; filename*=UTF-8''a%0Ab.txt`: "ab.txt",
		`attachment; xfilename=no.txt`:           "",
		"attachment; filename*=UTF-8''" + strings.Repeat("%E5%AD%97", 100): strings.Repeat("字", 85),
	} {
		if got := aibot.MediaFilename(in); got != want {
			t.Errorf("MediaFilename(%q) = %q, want %q", in, got, want)
		}
	}
}
