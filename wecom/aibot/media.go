package aibot

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"fmt"
	"mime"
	"net/url"
	"path"
	"strings"
	"unicode"
	"unicode/utf8"
)

const (
	mediaKeyLen      = 32
	mediaPadBlock    = 32 // PKCS#7 to 32-byte blocks, as the callback crypto
	maxFilenameBytes = 255
)

// DecryptMedia decrypts a downloaded image, file or video of a
// long-connection callback: AES-256-CBC with key = base64-decoded aeskey
// (32 bytes, padding optional) and IV = key[:16], PKCS#7 padding to 32-byte
// blocks. It works in place on a copy; data is not modified. Errors wrap
// wecom.ErrMalformed.
func DecryptMedia(data []byte, aesKey string) ([]byte, error) {
	key, err := decodeMediaKey(aesKey)
	if err != nil {
		return nil, err
	}
	if len(data) == 0 || len(data)%aes.BlockSize != 0 {
		return nil, malformed(fmt.Sprintf("media ciphertext length %d is not a positive multiple of %d", len(data), aes.BlockSize))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, malformed("media key rejected by AES")
	}
	out := make([]byte, len(data))
	cipher.NewCBCDecrypter(block, key[:aes.BlockSize]).CryptBlocks(out, data)
	pad := int(out[len(out)-1])
	if pad < 1 || pad > mediaPadBlock || pad > len(out) {
		return nil, malformed(fmt.Sprintf("media padding length %d out of range (wrong aeskey?)", pad))
	}
	for _, b := range out[len(out)-pad:] {
		if int(b) != pad {
			return nil, malformed("media padding bytes are not uniform (wrong aeskey?)")
		}
	}
	return out[: len(out)-pad : len(out)-pad], nil
}

// EncryptMedia is the inverse of DecryptMedia, for emulators and tests.
func EncryptMedia(plain []byte, aesKey string) ([]byte, error) {
	key, err := decodeMediaKey(aesKey)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, malformed("media key rejected by AES")
	}
	pad := mediaPadBlock - len(plain)%mediaPadBlock
	out := make([]byte, len(plain)+pad)
	copy(out, plain)
	for i := len(plain); i < len(out); i++ {
		out[i] = byte(pad)
	}
	cipher.NewCBCEncrypter(block, key[:aes.BlockSize]).CryptBlocks(out, out)
	return out, nil
}

func decodeMediaKey(s string) ([]byte, error) {
	s = strings.TrimRight(strings.TrimSpace(s), "=")
	key, err := base64.RawStdEncoding.DecodeString(s)
	if err != nil {
		// Lenient about the last character's unused bits, as Node's
		// Buffer.from(…, "base64") in Tencent's SDK.
		key, err = base64.StdEncoding.DecodeString(s + strings.Repeat("=", (4-len(s)%4)%4))
	}
	if err != nil || len(key) != mediaKeyLen {
		return nil, malformed("media aeskey is not base64 of 32 bytes")
	}
	return key, nil
}

// MediaFilename returns the file name from a download's Content-Disposition
// header: the RFC 5987 extended filename* (UTF-8, percent-encoded) first,
// then filename=, with
// percent-escapes decoded as Tencent's SDK does. The result is a bare name
// (no directories, no control characters, at most 255 bytes) or "".
func MediaFilename(contentDisposition string) string {
	var name string
	if _, params, err := mime.ParseMediaType(contentDisposition); err == nil {
		// mime decodes filename* into "filename" and prefers it. A plain
		// filename= is percent-decoded as the SDK's decodeURIComponent does.
		name = params["filename"]
		if !strings.Contains(strings.ToLower(contentDisposition), "filename*") {
			if s, err := url.PathUnescape(name); err == nil {
				name = s
			}
		}
	}
	if name == "" {
		name = dispositionParam(contentDisposition)
	}
	return cleanFilename(name)
}

// dispositionParam is the lenient fallback for headers mime rejects.
func dispositionParam(h string) string {
	// Byte-wise ASCII lowering keeps offsets valid in h; strings.ToLower
	// would not for invalid UTF-8.
	lb := []byte(h)
	for i, c := range lb {
		if 'A' <= c && c <= 'Z' {
			lb[i] = c + 'a' - 'A'
		}
	}
	lower := string(lb)
	if i := strings.Index(lower, "filename*="); i >= 0 {
		v := h[i+len("filename*="):]
		if j := strings.IndexAny(v, "; \t"); j >= 0 {
			v = v[:j]
		}
		v = strings.Trim(v, `"`)
		if k := strings.Index(v, "''"); k >= 0 {
			v = v[k+2:]
		}
		if s, err := url.PathUnescape(v); err == nil {
			return s
		}
		return v
	}
	for i := 0; ; {
		j := strings.Index(lower[i:], "filename=")
		if j < 0 {
			return ""
		}
		i += j
		if i > 0 && lower[i-1] != ';' && lower[i-1] != ' ' && lower[i-1] != '\t' {
			i += len("filename=")
			continue
		}
		v := h[i+len("filename="):]
		if strings.HasPrefix(v, `"`) {
			v = v[1:]
			if k := strings.IndexByte(v, '"'); k >= 0 {
				v = v[:k]
			}
		} else if k := strings.IndexAny(v, "; \t"); k >= 0 {
			v = v[:k]
		}
		if s, err := url.PathUnescape(v); err == nil {
			return s
		}
		return v
	}
}

func cleanFilename(name string) string {
	if !utf8.ValidString(name) {
		name = strings.ToValidUTF8(name, "_")
	}
	name = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, name)
	name = path.Base(strings.ReplaceAll(name, `\`, "/"))
	name = strings.TrimSpace(name)
	for len(name) > maxFilenameBytes {
		_, size := utf8.DecodeLastRuneInString(name)
		name = name[:len(name)-size]
	}
	if name == "." || name == ".." || name == "/" {
		return ""
	}
	return name
}
