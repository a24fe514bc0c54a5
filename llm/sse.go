package llm

import (
	"bytes"
	"io"
)

// sseEvent is one dispatched server-sent event. Its slices are only valid
// until the next call to sseReader.next.
type sseEvent struct {
	// Event is the value of the last "event:" field; empty means the
	// default type ("message" in the SSE specification).
	Event []byte
	// Data is the "data:" field values joined with "\n".
	Data []byte
}

// sseReader parses a text/event-stream body following the WHATWG
// server-sent events rules: lines end in LF, CRLF or a lone CR; a blank line
// dispatches the pending event; lines starting with ':' are comments; an
// event without any data field (Dify's bare "event: ping") is not
// dispatched. Unlike bufio.Scanner it has no fixed line limit: lines and
// events may grow up to max bytes, beyond which next fails with
// ErrEventTooLarge instead of buffering without bound.
type sseReader struct {
	rd     io.Reader
	buf    []byte // buffered input is buf[r:w]
	r, w   int
	rerr   error // sticky error from rd
	skipLF bool  // the previous line ended in CR; drop a following LF
	max    int

	event   []byte
	data    []byte
	hasData bool
}

const (
	sseInitialBuffer = 4 << 10
	sseDefaultMax    = 8 << 20
)

func newSSEReader(rd io.Reader, max int) *sseReader {
	if max <= 0 {
		max = sseDefaultMax
	}
	return &sseReader{rd: rd, buf: make([]byte, sseInitialBuffer), max: max}
}

// next returns the next event. It returns io.EOF at a clean end of input;
// an event that was not terminated by a blank line is discarded, as the
// specification requires. Any other read error is returned as is.
func (s *sseReader) next() (sseEvent, error) {
	for {
		line, err := s.readLine()
		if err != nil {
			return sseEvent{}, err
		}
		if len(line) == 0 {
			if !s.hasData {
				s.event = s.event[:0]
				continue
			}
			ev := sseEvent{Event: s.event, Data: s.data}
			// Reset for the next event; the returned slices stay valid
			// until the next call because we only truncate them.
			s.event = s.event[:0]
			s.data = s.data[:0]
			s.hasData = false
			return ev, nil
		}
		if line[0] == ':' {
			continue // comment, e.g. ": keep-alive"
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(field) {
		case "data":
			if s.hasData {
				s.data = append(s.data, '\n')
			}
			if len(s.data)+len(value) > s.max {
				return sseEvent{}, ErrEventTooLarge
			}
			s.data = append(s.data, value...)
			s.hasData = true
		case "event":
			s.event = append(s.event[:0], value...)
		}
		// id, retry and unknown fields are ignored.
	}
}

// readLine returns the next line without its terminator. The slice aliases
// the internal buffer and is valid until the next call.
func (s *sseReader) readLine() ([]byte, error) {
	scanned := 0 // bytes of buf[r:w] already known to hold no terminator
	for {
		if s.skipLF && s.r < s.w {
			if s.buf[s.r] == '\n' {
				s.r++
			}
			s.skipLF = false
		}
		seg := s.buf[s.r:s.w]
		if !s.skipLF && scanned < len(seg) {
			end := -1
			tail := seg[scanned:]
			if i := bytes.IndexByte(tail, '\n'); i >= 0 {
				end = scanned + i
				if j := bytes.IndexByte(tail[:i], '\r'); j >= 0 {
					end = scanned + j
					s.skipLF = true
				}
			} else if j := bytes.IndexByte(tail, '\r'); j >= 0 {
				end = scanned + j
				s.skipLF = true
			}
			if end >= 0 {
				line := seg[:end]
				s.r += end + 1
				return line, nil
			}
			scanned = len(seg)
		}
		if s.rerr != nil {
			err := s.rerr
			if s.r < s.w {
				// A partial last line: the stream was cut mid-line.
				s.r = s.w
			}
			return nil, err
		}
		if len(seg) >= s.max {
			return nil, ErrEventTooLarge
		}
		s.fill()
	}
}

// fill reads more input, first making room by moving the unread bytes to
// the front of the buffer or growing it.
func (s *sseReader) fill() {
	if s.r > 0 {
		n := copy(s.buf, s.buf[s.r:s.w])
		s.r, s.w = 0, n
	}
	if s.w == len(s.buf) {
		size := 2 * len(s.buf)
		if size > s.max+1 {
			size = s.max + 1
		}
		nb := make([]byte, size)
		copy(nb, s.buf[:s.w])
		s.buf = nb
	}
	for tries := 0; tries < 100; tries++ {
		n, err := s.rd.Read(s.buf[s.w:])
		s.w += n
		if err != nil {
			s.rerr = err
			return
		}
		if n > 0 {
			return
		}
	}
	s.rerr = io.ErrNoProgress
}
