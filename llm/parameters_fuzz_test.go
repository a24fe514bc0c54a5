package llm

import (
	"slices"
	"strings"
	"testing"
)

// FuzzDifyParameters feeds GET /parameters bodies to the parser. The body
// comes from the network (a misconfigured base_url can point anywhere), so
// it must never panic, and what it reports must stay within the known
// kinds, sorted, with normalised extensions and sane sizes.
func FuzzDifyParameters(f *testing.F) {
	for _, s := range []string{
		`{"file_upload":{"image":{"enabled":false,"number_limits":3,"detail":"high","transfer_methods":["remote_url","local_file"]}},"system_parameters":{"image_file_size_limit":10,"video_file_size_limit":100,"audio_file_size_limit":50,"file_size_limit":15,"workflow_file_upload_limit":10}}`,
		`{"file_upload":{"image":{"enabled":true,"number_limits":3,"transfer_methods":["local_file"]},"enabled":true,"allowed_file_types":["image","document","custom"],"allowed_file_extensions":[".JPG","PDF",""],"allowed_file_upload_methods":["local_file","remote_url"],"number_limits":3}}`,
		`{"file_upload":{"enabled":"true","allowed_file_types":["video","audio","bogus"],"number_limits":"7"},"system_parameters":{"file_size_limit":"15"}}`,
		`{"file_upload":{"enabled":true,"allowed_file_upload_methods":["remote_url"]}}`,
		`{"file_upload":null}`, `{"file_upload":{"enabled":1e400}}`, `{"file_upload":{"number_limits":-5,"enabled":true}}`,
		`[]`, `null`, `{`, ``,
	} {
		f.Add([]byte(s))
	}
	known := []FileKind{FileImage, FileDocument, FileAudio, FileVideo}
	f.Fuzz(func(t *testing.T, body []byte) {
		caps, err := parseDifyParameters(body)
		if err != nil {
			return
		}
		if caps.Backend != TypeDify || caps.Setting == "" {
			t.Fatalf("caps %+v", caps)
		}
		if !caps.Enabled && (len(caps.Kinds) > 0 || caps.MaxFiles != 0) {
			t.Fatalf("disabled caps with kinds: %+v", caps)
		}
		last := -1
		for _, k := range caps.Kinds {
			i := slices.Index(known, k)
			if i <= last {
				t.Fatalf("kinds %v unknown, repeated or unsorted", caps.Kinds)
			}
			last = i
		}
		for _, e := range caps.CustomExtensions {
			if !strings.HasPrefix(e, ".") || e != strings.ToLower(e) || len(e) < 2 {
				t.Fatalf("extension %q", e)
			}
		}
		if caps.MaxFiles < 0 {
			t.Fatalf("max files %d", caps.MaxFiles)
		}
		for k, n := range caps.MaxBytes {
			if n <= 0 || !slices.Contains(known, k) {
				t.Fatalf("size %s = %d", k, n)
			}
		}
		// Check never panics on what was parsed.
		_ = caps.Check(File{Name: "a.png", Data: []byte{1}}, File{Name: "b.pdf", Data: []byte{1}})
	})
}
