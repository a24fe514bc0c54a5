package emulator

import (
	"bytes"
	"mime"
	"net/http"
	"slices"
	"time"
)

// Media limits, as WeCom documents them for media/get.
const (
	// DefaultMediaTTL is how long a media_id stays valid: three days.
	DefaultMediaTTL = 72 * time.Hour
	// MaxMediaWithoutRange is the largest file media/get serves without a
	// Range header; larger ones get errcode 830002.
	MaxMediaWithoutRange = 20 << 20
)

type media struct {
	corpID      string
	data        []byte
	contentType string
	filename    string
	expires     time.Time
}

// AddMedia stores a temporary media file (临时素材) for corpID, as an upload
// by one of its apps or a member's image or file message would, and
// returns its media_id. Every app of the corp can fetch it with media/get
// until Options.MediaTTL has passed. An empty filename is served as
// "MEDIA_ID" with no extension.
func (s *Server) AddMedia(corpID string, data []byte, contentType, filename string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := "m" + randomHex(24)
	if filename == "" {
		filename = id
	}
	s.media[id] = &media{
		corpID: corpID, data: slices.Clone(data), contentType: contentType, filename: filename,
		expires: s.opts.Now().Add(s.opts.MediaTTL),
	}
	return id
}

// getMedia serves media/get: the file as a plain download with
// Content-Disposition, Range requests included, or a JSON error.
func (s *Server) getMedia(w http.ResponseWriter, r *http.Request) {
	a, okAuth := s.auth(w, r)
	if !okAuth {
		return
	}
	id := r.URL.Query().Get("media_id")
	s.mu.Lock()
	m := s.media[id]
	valid := m != nil && m.corpID == a.corpID && s.opts.Now().Before(m.expires)
	s.mu.Unlock()
	switch {
	case !valid:
		s.apiError(w, r, 40007, "invalid media_id")
		return
	case len(m.data) > MaxMediaWithoutRange && r.Header.Get("Range") == "":
		s.apiError(w, r, 830002, "media file too large, use Range to download in parts")
		return
	}
	ct := m.contentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": m.filename}))
	w.Header().Set("Cache-Control", "no-cache, must-revalidate")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(m.data))
}
