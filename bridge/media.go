package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/wecom-bridge/wecom-bridge/kv"
	"github.com/wecom-bridge/wecom-bridge/llm"
	"github.com/wecom-bridge/wecom-bridge/wecom"
	"github.com/wecom-bridge/wecom-bridge/wecom/aibot"
)

// Attachments: a picture, file or voice message is downloaded as soon as it
// is accepted (WeCom's media ids expire after 3 days, a bot's URLs after 5
// minutes) into the media directory next to the database, and recorded in
// the job before it is asked about, so that neither a restart nor an LLM
// outage loses it. A picture sent alone is held (its lane parked) for the
// text question that usually follows, and joins it.

// mediaDir is where attachments are kept: next to the database.
func mediaDir(cfg *Config) string { return cfg.Storage.Path + ".media" }

// botMediaTTL is how long a bot's media URL can be downloaded.
const botMediaTTL = 5 * time.Minute

// fetchers bounds the downloads running at once.
const fetchers = 4

// fetchSoon starts downloading a new job's attachments at once (before its
// turn comes), so that a short-lived URL does not expire in the queue.
func (b *Bridge) fetchSoon(j *kv.Job) {
	if len(j.Attachments) == 0 {
		return
	}
	done := make(chan struct{})
	b.fetchMu.Lock()
	b.fetching[j.ID] = done
	b.fetchMu.Unlock()
	b.bg.Add(1)
	go func() {
		defer b.bg.Done()
		defer func() {
			b.fetchMu.Lock()
			delete(b.fetching, j.ID)
			b.fetchMu.Unlock()
			close(done)
		}()
		select {
		case b.fetchSem <- struct{}{}:
		case <-b.root.Done():
			return
		}
		defer func() { <-b.fetchSem }()
		ep := b.endpoint(j.App)
		if ep == nil {
			return
		}
		jc := *j
		jc.Attachments = append([]kv.Attachment(nil), j.Attachments...)
		if err := b.fetch(b.root, ep, &jc); err != nil {
			b.log.Warn("cannot fetch an attachment yet; it is fetched again when the question's turn comes", "job", j.ID, "err", err)
		}
	}()
}

// awaitFetch waits for a download started by fetchSoon, if one runs.
func (b *Bridge) awaitFetch(ctx context.Context, id uint64) {
	b.fetchMu.Lock()
	done := b.fetching[id]
	b.fetchMu.Unlock()
	if done == nil {
		return
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// fetch downloads the attachments of j that are not fetched yet, keeps
// them in the media directory and records them in the job and its history
// entry. An attachment that cannot be had (expired, too large) gets a
// Problem for the user; a transient failure is returned for a retry.
func (b *Bridge) fetch(ctx context.Context, ep endpoint, j *kv.Job) error {
	cfg := b.config()
	dir := mediaDir(cfg)
	changed := false
	var transient error
	for i := range j.Attachments {
		a := &j.Attachments[i]
		if a.File != "" || a.Problem != "" {
			continue
		}
		data, ctype, name, err := b.download(ctx, ep, a)
		switch {
		case err == nil && int64(len(data)) > cfg.Media.MaxBytes:
			a.Problem = fmt.Sprintf("文件太大（%s），上限为 %s。", humanBytes(int64(len(data))), humanBytes(cfg.Media.MaxBytes))
			changed = true
			continue
		case errors.Is(err, wecom.ErrTooLarge):
			a.Problem = fmt.Sprintf("文件太大，上限为 %s。", humanBytes(cfg.Media.MaxBytes))
			changed = true
			continue
		case err != nil:
			r := wecom.Classify(err)
			// A bot's URL lives five minutes: past that, retrying is
			// pointless.
			late := a.URL != "" && b.now().Sub(j.Received) > botMediaTTL
			if !r.Heal || late || errors.Is(err, errMediaExpired) {
				a.Problem = "这个附件已经过期或无法下载，请重新发送。"
				changed = true
				b.log.Warn("attachment cannot be downloaded", "job", j.ID, "kind", a.Kind, "err", err)
				continue
			}
			transient = err
			continue
		}
		if a.MIME == "" || a.MIME == "application/octet-stream" {
			a.MIME = ctype
		}
		if a.MIME == "" || a.MIME == "application/octet-stream" {
			a.MIME = http.DetectContentType(data)
		}
		if a.Name == "" {
			a.Name = name
		}
		file := fmt.Sprintf("%d-%d%s", j.ID, i, mediaExt(a))
		if err := writeDurable(dir, file, data); err != nil {
			return stored(err)
		}
		a.File, a.Size = file, int64(len(data))
		changed = true
	}
	if changed {
		// Recorded against the job as stored now: a held question's
		// attachments may have joined it meanwhile.
		fetched := append([]kv.Attachment(nil), j.Attachments...)
		if err := b.store.SetFetched(j, fetched); err != nil && !errors.Is(err, kv.ErrNotFound) {
			return stored(err)
		}
	}
	return transient
}

// errMediaExpired is a bot media URL past its five minutes.
var errMediaExpired = errors.New("bridge: the attachment's download URL has expired")

// download fetches one attachment from WeCom: media/get for an app, the
// encrypted URL (decrypted with its aeskey) for a bot.
func (b *Bridge) download(ctx context.Context, ep endpoint, a *kv.Attachment) (data []byte, ctype, name string, err error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	switch e := ep.(type) {
	case *app:
		m, err := e.client.Media(ctx, a.MediaID)
		if err != nil {
			return nil, "", "", err
		}
		return m.Data, m.ContentType, m.Filename, nil
	case *bot:
		if a.URL == "" {
			return nil, "", "", errMediaExpired
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.URL, nil)
		if err != nil {
			return nil, "", "", fmt.Errorf("bridge: attachment URL: %w", err)
		}
		resp, err := b.wecomHC.Do(req)
		if err != nil {
			return nil, "", "", fmt.Errorf("bridge: download attachment: %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone {
			return nil, "", "", errMediaExpired
		}
		if resp.StatusCode != http.StatusOK {
			return nil, "", "", fmt.Errorf("bridge: download attachment: HTTP %d", resp.StatusCode)
		}
		limit := b.config().Media.MaxBytes + 64
		raw, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
		if err != nil {
			return nil, "", "", fmt.Errorf("bridge: download attachment: %w", err)
		}
		if int64(len(raw)) > limit {
			return nil, "", "", fmt.Errorf("%w: over %d bytes", wecom.ErrTooLarge, limit)
		}
		plain := raw
		if a.AESKey != "" {
			if plain, err = aibot.DecryptMedia(raw, a.AESKey); err != nil {
				return nil, "", "", fmt.Errorf("bridge: decrypt attachment: %w", err)
			}
		}
		return plain, "", aibot.MediaFilename(resp.Header.Get("Content-Disposition")), nil
	}
	return nil, "", "", fmt.Errorf("bridge: attachments of this channel are not supported")
}

// writeDurable writes a file atomically and durably: a temporary file,
// fsync, rename, fsync of the directory.
func writeDurable(dir, name string, data []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("bridge: media directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("bridge: media file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("bridge: media file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("bridge: media file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("bridge: media file: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("bridge: media file: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// mediaExt is a safe file extension for an attachment.
func mediaExt(a *kv.Attachment) string {
	if ext := strings.ToLower(filepath.Ext(a.Name)); len(ext) > 1 && len(ext) <= 8 && isAlnum(ext[1:]) {
		return ext
	}
	if exts, _ := mime.ExtensionsByType(a.MIME); len(exts) > 0 {
		return exts[0]
	}
	switch a.Kind {
	case "voice":
		return ".amr"
	case "image":
		return ".jpg"
	}
	return ".bin"
}

func isAlnum(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// humanBytes writes a size for users: 1.5 MB, 300 KB.
func humanBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MB"
	case n >= 1<<10:
		return strconv.FormatInt(n>>10, 10) + " KB"
	}
	return strconv.FormatInt(n, 10) + " B"
}

// hold decides whether a question of attachments alone waits for the text
// that usually follows: it returns how long to park the lane, -1 when the
// job was merged into the question after it (it is gone), or 0 to answer
// it now (the window is over, or a command came next).
func (b *Bridge) hold(ctx context.Context, j *kv.Job, lane string) time.Duration {
	if j.Kind != kv.KindQuestion || len(j.Attachments) == 0 || strings.TrimSpace(j.Text) != "" || j.AnswerDone || j.Attempts > 0 {
		return 0
	}
	b.awaitFetch(ctx, j.ID) // its files first: they may say there is nothing to wait for
	if cur, err := b.store.Job(j.ID); err == nil {
		j = cur
	}
	usable, voice := false, true
	for _, a := range j.Attachments {
		usable = usable || a.Problem == ""
		voice = voice && a.Kind == "voice"
	}
	if !usable || voice {
		return 0 // tell the user now why none can be used; a voice message is its own question
	}
	if next, ok := b.pool.peek(lane); ok {
		nj, err := b.store.Job(next.ID)
		if err != nil || nj.Kind != kv.KindQuestion {
			return 0 // a command, or unreadable: answer the picture now
		}
		if err := b.store.MergeAttachments(nj, j); err != nil {
			b.log.Warn("cannot join the attachments to the next question; answering them alone", "job", j.ID, "err", err)
			return 0
		}
		b.log.Debug("attachments joined the next question", "job", j.ID, "into", nj.ID)
		if ep, ok := b.endpoint(j.App).(*bot); ok && ep.conn != nil {
			if l := ep.conn.remove(j.ID); l != nil {
				l.closeWith("（已收到，和你的下一条消息一起回答。）")
			}
		}
		return -1
	}
	if wait := time.Until(j.Received.Add(b.config().Media.Hold)); wait > 0 {
		return wait
	}
	return 0
}

// questionFiles reads the fetched attachments of a job for the backend,
// fetching what is still missing (after a restart). It returns the files,
// the problems to tell the user about, and a transient error.
func (b *Bridge) questionFiles(ctx context.Context, ep endpoint, j *kv.Job) ([]llm.File, []string, error) {
	if len(j.Attachments) == 0 {
		return nil, nil, nil
	}
	b.awaitFetch(ctx, j.ID)
	if cur, err := b.store.Job(j.ID); err == nil {
		j.Attachments = cur.Attachments
	}
	if err := b.fetch(ctx, ep, j); err != nil {
		return nil, nil, err
	}
	dir := mediaDir(b.config())
	var files []llm.File
	var problems []string
	for _, a := range j.Attachments {
		if a.Problem != "" {
			problems = append(problems, a.Problem)
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, a.File))
		if err != nil {
			problems = append(problems, "这个附件在服务器上找不到了，请重新发送。")
			b.log.Error("attachment file missing", "job", j.ID, "file", a.File, "err", err)
			continue
		}
		f := llm.File{Name: a.Name, MIME: a.MIME, Data: data}
		switch a.Kind {
		case "image":
			f.Kind = llm.FileImage
		case "voice":
			f.Kind = llm.FileAudio
		case "video":
			f.Kind = llm.FileVideo
		}
		files = append(files, f)
	}
	return files, problems, nil
}

// pruneMedia deletes attachment files older than the history retention,
// keeping those of questions still pending.
func (b *Bridge) pruneMedia(retention time.Duration) {
	if retention <= 0 {
		return
	}
	dir := mediaDir(b.config())
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	cut := b.now().Add(-retention)
	for _, e := range ents {
		info, err := e.Info()
		if err != nil || e.IsDir() || !info.ModTime().Before(cut) {
			continue
		}
		if id, ok := mediaJobID(e.Name()); ok {
			if _, err := b.store.Job(id); err == nil {
				continue // still being answered
			}
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			b.log.Warn("prune media", "err", err)
		}
	}
}

// mediaJobID reads the job id from a media file name "ID-N.ext".
func mediaJobID(name string) (uint64, bool) {
	i := strings.IndexByte(name, '-')
	if i <= 0 {
		return 0, false
	}
	id, err := strconv.ParseUint(name[:i], 10, 64)
	return id, err == nil
}

// question is what is asked: the text (or the default prompt for
// attachments alone), the files, and a note that goes in front of the answer
// (what was transcribed, what could not be used).
type question struct {
	query  string
	files  []llm.File
	prefix string
}

// prepareQuestion reads a job's attachments and decides what to ask. done
// is non-empty when the job was answered here instead (nothing usable:
// the user was told why).
func (b *Bridge) prepareQuestion(ctx context.Context, ep endpoint, r replier, j *kv.Job, log interface {
	Warn(string, ...any)
}) (question, kv.Status, error) {
	q := question{query: j.Text}
	if len(j.Attachments) == 0 {
		return q, "", nil
	}
	files, problems, err := b.questionFiles(ctx, ep, j)
	if err != nil {
		var se *storageError
		if errors.As(err, &se) {
			return q, "", err
		}
		return q, "", &transientError{err}
	}
	cfg := b.config()
	// Voice: transcribed, then asked as text.
	var kept []llm.File
	var heard []string
	for _, f := range files {
		if f.Kind != llm.FileAudio {
			kept = append(kept, f)
			continue
		}
		text, err := b.transcribe(ctx, f)
		if err != nil {
			log.Warn("cannot transcribe a voice message", "err", err)
			problems = append(problems, "暂时听不了语音消息，请把问题用文字发给我。")
			continue
		}
		heard = append(heard, text)
	}
	files = kept
	if len(heard) > 0 {
		said := strings.Join(heard, " ")
		q.prefix = "你说的是：" + said + "\n\n"
		q.query = strings.TrimSpace(q.query + "\n" + said)
	}
	if strings.TrimSpace(q.query) == "" {
		q.query = cfg.Media.DefaultPrompt
	}
	if len(problems) > 0 {
		note := "（" + strings.Join(problems, " ") + "）"
		if len(files) == 0 && len(heard) == 0 && strings.TrimSpace(j.Text) == "" {
			return q, kv.StatusRefused, fixed(ctx, r, j, note, &kv.EntryUpdate{Answer: note, Status: kv.StatusRefused})
		}
		q.prefix += note + "\n\n"
	}
	q.files = files
	if len(files) == 0 {
		return q, "", nil
	}
	s := ep.settings()
	fs, ok := s.backend.(llm.FileSupport)
	if !ok {
		text := "抱歉，这个助手不能读取图片或文件，请把问题用文字发给我。"
		return q, kv.StatusRefused, fixed(ctx, r, j, text, &kv.EntryUpdate{Answer: text, Status: kv.StatusRefused})
	}
	caps, err := fs.Capabilities(ctx)
	if err != nil {
		return q, "", &transientError{err}
	}
	if err := caps.Check(files...); err != nil {
		var fe *llm.FileError
		if errors.As(err, &fe) {
			log.Warn("the backend does not take this attachment", "kind", fe.Kind, "reason", fe.Reason, "fix", fe.Hint)
			return q, kv.StatusRefused, fixed(ctx, r, j, fe.Reason, &kv.EntryUpdate{Answer: fe.Reason, Status: kv.StatusRefused})
		}
		return q, "", &transientError{err}
	}
	return q, "", nil
}

// transcribe turns a voice message into text (media.speech_backend, and
// ffmpeg for AMR).
func (b *Bridge) transcribe(ctx context.Context, f llm.File) (string, error) {
	sp := b.speech.Load()
	if ok, why := sp.available(); !ok {
		return "", fmt.Errorf("bridge: voice messages cannot be transcribed: %s", why)
	}
	return sp.transcribe(ctx, f.Data, f.MIME, f.Name)
}
