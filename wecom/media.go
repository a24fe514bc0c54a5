package wecom

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// MaxMediaBytes is the largest temporary media file Media downloads. WeCom
// itself refuses files over 20 MB without a Range header (errcode 830002).
const MaxMediaBytes = 20 << 20

const pathMediaGet = "/cgi-bin/media/get"

// Media is a downloaded temporary media file (临时素材).
type Media struct {
	// Data is the file's content.
	Data []byte
	// ContentType is WeCom's Content-Type header, e.g. "image/jpeg".
	ContentType string
	// Filename is the file name from Content-Disposition, without any
	// directory part; WeCom names files "MEDIA_ID.ext" or after the upload.
	// It can be empty.
	Filename string
}

// Media downloads a temporary media file by its media_id (media/get), as
// found in the MediaId of an image, voice, video or file callback. A
// media_id is valid for three days and is shared by every app of the corp;
// an expired or unknown one gives APIError 40007. Files over MaxMediaBytes
// give an error wrapping ErrTooLarge.
func (c *Client) Media(ctx context.Context, mediaID string) (*Media, error) {
	if mediaID == "" {
		return nil, fmt.Errorf("wecom: get media: %w: empty media_id", ErrInvalidConfig)
	}
	var m *Media
	q := url.Values{"media_id": {mediaID}}
	err := c.withToken(ctx, "get media", pathMediaGet, func(tok string) error {
		return c.exchange(ctx, http.MethodGet, pathMediaGet, tokenQuery(q, tok), nil, func(resp *http.Response) error {
			var err error
			m, err = readMedia(ctx, resp)
			return err
		})
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// readMedia reads a media/get answer: the file, or a JSON error body.
// WeCom sends files with a Content-Disposition header and errors without.
func readMedia(ctx context.Context, resp *http.Response) (*Media, error) {
	disp := resp.Header.Get("Content-Disposition")
	ct := resp.Header.Get("Content-Type")
	if disp == "" && (strings.Contains(ct, "json") || strings.HasPrefix(ct, "text/plain")) {
		var st apiStatus
		if err := decodeStatus(ctx, pathMediaGet, resp.Body, &st); err != nil {
			return nil, err
		}
		return nil, malformed("media/get answered JSON without an error")
	}
	if resp.ContentLength > MaxMediaBytes {
		return nil, fmt.Errorf("%w: media is %d bytes, limit %d", ErrTooLarge, resp.ContentLength, MaxMediaBytes)
	}
	var b bytes.Buffer
	n, err := b.ReadFrom(io.LimitReader(resp.Body, MaxMediaBytes+1))
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		return nil, &temporaryError{fmt.Errorf("%s: read media: %w", pathMediaGet, err)}
	}
	if n > MaxMediaBytes {
		return nil, fmt.Errorf("%w: media is over %d bytes", ErrTooLarge, MaxMediaBytes)
	}
	return &Media{Data: b.Bytes(), ContentType: ct, Filename: dispositionFilename(disp)}, nil
}

// dispositionFilename returns the file name of a Content-Disposition
// header (filename, or RFC 2231 filename*), reduced to its last path
// element and stripped of control characters; "" if there is none.
func dispositionFilename(disp string) string {
	if disp == "" {
		return ""
	}
	_, params, err := mime.ParseMediaType(disp)
	if err != nil && !errors.Is(err, mime.ErrInvalidMediaParameter) {
		return ""
	}
	name := params["filename"]
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	name = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, name)
	if name == "." || name == ".." {
		return ""
	}
	return name
}
