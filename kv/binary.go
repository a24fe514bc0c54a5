package kv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// History entries are stored in a compact binary form (about half the size
// of their JSON, and no reflection): a format byte, then the fields in a
// fixed order. Records of older releases are JSON and start with '{'; the
// decoder reads both.
const entryFormatV1 = 0x01

var errShort = errors.New("record ends early")

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return binary.AppendVarint(b, 0)
	}
	return binary.AppendVarint(b, t.UnixNano())
}

func encodeEntry(e *Entry) []byte {
	b := make([]byte, 0, 48+len(e.App)+len(e.User)+len(e.Question)+len(e.Answer)+len(e.RefID)+len(e.Status))
	b = append(b, entryFormatV1)
	b = appendString(b, e.User) // first, so a scan can filter by user cheaply
	b = binary.AppendUvarint(b, e.ID)
	b = appendString(b, e.App)
	b = appendString(b, e.Question)
	b = appendString(b, e.Answer)
	b = appendString(b, string(e.Status))
	b = binary.AppendVarint(b, int64(e.ConvSeq))
	var fl byte
	if e.NewConv {
		fl |= 1
	}
	if e.Truncated {
		fl |= 2
	}
	b = append(b, fl)
	b = appendString(b, e.RefID)
	b = appendTime(b, e.Created)
	b = appendTime(b, e.Updated)
	b = appendString(b, e.Chat)
	b = appendString(b, e.MessageID)
	b = appendString(b, e.Feedback)
	b = appendString(b, e.FeedbackComment)
	return appendAttachments(b, e.Attachments)
}

// appendAttachments writes a count, then each attachment's fields.
func appendAttachments(b []byte, as []Attachment) []byte {
	b = binary.AppendUvarint(b, uint64(len(as)))
	for _, a := range as {
		for _, s := range []string{a.Kind, a.Name, a.MIME, a.MediaID, a.URL, a.AESKey, a.File, a.Transcript, a.Problem} {
			b = appendString(b, s)
		}
		b = binary.AppendVarint(b, a.Size)
	}
	return b
}

func (r *reader) attachments() []Attachment {
	n := r.uvarint()
	if r.err != nil || n == 0 {
		return nil
	}
	if n > uint64(len(r.b)) { // each takes at least ten bytes
		r.err = errShort
		return nil
	}
	out := make([]Attachment, 0, n)
	for i := uint64(0); i < n && r.err == nil; i++ {
		var a Attachment
		for _, p := range []*string{&a.Kind, &a.Name, &a.MIME, &a.MediaID, &a.URL, &a.AESKey, &a.File, &a.Transcript, &a.Problem} {
			*p = r.string()
		}
		a.Size = r.varint()
		out = append(out, a)
	}
	return out
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errShort
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errShort
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = errShort
		return nil
	}
	s := r.b[:n]
	r.b = r.b[n:]
	return s
}

func (r *reader) string() string { return string(r.bytes()) }

func (r *reader) byte() byte {
	if r.err != nil || len(r.b) == 0 {
		r.err = errShort
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) time() time.Time {
	n := r.varint()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// decodeEntry reads an entry in either encoding. It copies everything out of
// v (which may alias bbolt's memory map).
func decodeEntry(v []byte, e *Entry) error {
	if len(v) > 0 && v[0] == '{' {
		return decode(v, e)
	}
	if len(v) == 0 || v[0] != entryFormatV1 {
		return fmt.Errorf("kv: decode entry: unknown format (%w)", ErrCorrupt)
	}
	r := &reader{b: v[1:]}
	*e = Entry{}
	e.User = r.string()
	e.ID = r.uvarint()
	e.App = r.string()
	e.Question = r.string()
	e.Answer = r.string()
	e.Status = Status(r.string())
	e.ConvSeq = int(r.varint())
	fl := r.byte()
	e.NewConv, e.Truncated = fl&1 != 0, fl&2 != 0
	e.RefID = r.string()
	e.Created = r.time()
	e.Updated = r.time()
	e.Chat = r.string()
	e.MessageID = r.string()
	e.Feedback = r.string()
	e.FeedbackComment = r.string()
	e.Attachments = r.attachments()
	if r.err != nil {
		return fmt.Errorf("kv: decode entry: %w (%w)", r.err, ErrCorrupt)
	}
	return nil
}

// entryUser returns the user id of an encoded entry without decoding the
// rest (nil if the record is not in the binary form).
func entryUser(v []byte) []byte {
	if len(v) == 0 || v[0] != entryFormatV1 {
		return nil
	}
	r := &reader{b: v[1:]}
	u := r.bytes()
	if r.err != nil {
		return nil
	}
	return u
}

// Pending jobs use the same scheme (format byte jobFormatV1). Every field of
// Job must be written here: TestJobCodecCoversEveryField fills each one by
// reflection and fails on a field the codec drops.
const jobFormatV1 = 0x01

func encodeJob(j *Job) []byte {
	n := 64 + len(j.App) + len(j.User) + len(j.DedupKey) + len(j.Text) + len(j.Answer) + len(j.NoticeMsgID) + len(j.RefID)
	if j.Segment != nil {
		for _, p := range j.Segment.Pieces {
			n += len(p) + 2
		}
	}
	b := make([]byte, 0, n)
	b = append(b, jobFormatV1)
	b = binary.AppendUvarint(b, j.ID)
	b = appendString(b, j.App)
	b = appendString(b, j.User)
	b = appendString(b, j.DedupKey)
	b = appendString(b, string(j.Kind))
	b = appendString(b, j.Text)
	b = appendString(b, j.MsgType)
	b = appendString(b, j.Event)
	b = appendTime(b, j.Received)
	b = appendTime(b, j.MsgTime)
	b = binary.AppendVarint(b, int64(j.Attempts))
	b = appendString(b, j.Answer)
	var fl byte
	if j.AnswerDone {
		fl |= 1
	}
	if j.Failed {
		fl |= 2
	}
	if j.Segment != nil {
		fl |= 4
	}
	b = append(b, fl)
	b = binary.AppendVarint(b, int64(j.Delivered))
	if j.Segment != nil {
		b = binary.AppendVarint(b, int64(j.Segment.RawEnd))
		b = binary.AppendVarint(b, int64(j.Segment.Sent))
		b = binary.AppendUvarint(b, uint64(len(j.Segment.Pieces)))
		for _, p := range j.Segment.Pieces {
			b = appendString(b, p)
		}
	}
	b = appendString(b, j.NoticeMsgID)
	b = appendString(b, j.RefID)
	b = binary.AppendVarint(b, int64(j.Panics))
	b = appendString(b, j.Chat)
	b = appendString(b, j.ReqID)
	b = appendString(b, j.ConvOwner)
	if j.Segment != nil {
		b = binary.AppendUvarint(b, j.Segment.Dup)
	}
	return appendAttachments(b, j.Attachments)
}

// decodeJob reads a job in either encoding (JSON from older releases).
func decodeJob(v []byte, j *Job) error {
	if len(v) > 0 && v[0] == '{' {
		return decode(v, j)
	}
	if len(v) == 0 || v[0] != jobFormatV1 {
		return fmt.Errorf("kv: decode job: unknown format (%w)", ErrCorrupt)
	}
	r := &reader{b: v[1:]}
	*j = Job{}
	j.ID = r.uvarint()
	j.App = r.string()
	j.User = r.string()
	j.DedupKey = r.string()
	j.Kind = Kind(r.string())
	j.Text = r.string()
	j.MsgType = r.string()
	j.Event = r.string()
	j.Received = r.time()
	j.MsgTime = r.time()
	j.Attempts = int(r.varint())
	j.Answer = r.string()
	fl := r.byte()
	j.AnswerDone, j.Failed = fl&1 != 0, fl&2 != 0
	j.Delivered = int(r.varint())
	if fl&4 != 0 {
		seg := &Segment{RawEnd: int(r.varint()), Sent: int(r.varint())}
		n := r.uvarint()
		if n > uint64(len(r.b)) { // each piece takes at least one byte
			r.err = errShort
		}
		if r.err == nil {
			seg.Pieces = make([]string, 0, n)
			for i := uint64(0); i < n; i++ {
				seg.Pieces = append(seg.Pieces, r.string())
			}
		}
		j.Segment = seg
	}
	j.NoticeMsgID = r.string()
	j.RefID = r.string()
	j.Panics = int(r.varint())
	j.Chat = r.string()
	j.ReqID = r.string()
	j.ConvOwner = r.string()
	if j.Segment != nil {
		j.Segment.Dup = r.uvarint()
	}
	j.Attachments = r.attachments()
	if r.err != nil {
		return fmt.Errorf("kv: decode job: %w (%w)", r.err, ErrCorrupt)
	}
	return nil
}
