package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// backlogRun is what the hanging-LLM run measured.
type backlogRun struct {
	n, users        int
	intake          result
	idle            memory
	waitHWM         int64 // VmHWM once every question waits
	waitRSS         memory
	sizeWaiting     int64         // store files with every question waiting
	drain           time.Duration // until the daemon reported every question answered
	deliver         time.Duration // until WeCom had every answer
	drainHWM        int64         // VmHWM after the backlog was answered
	delivered       int           // answers WeCom received, one per question
	outOfOrder      int           // answers that came before an earlier question's
	missing, dupes  int
	budgetDrops     int // messages WeCom dropped over its per-member limit
	budgetDropsSeen bool
}

func (b backlogRun) inOrder() bool {
	return b.outOfOrder == 0 && b.missing == 0 && b.dupes == 0 && b.budgetDrops == 0
}

// backlogMark is put in each backlog question, and comes back in the echoed
// answer: "backlog <user> q=<k>" is the k-th question of that user.
const backlogMark = "backlog "

// backlog sends -backlog distinct questions while the LLM hangs, records
// the daemon's peak memory with all of them waiting, then lets the LLM
// answer (it echoes at once) and measures how long the backlog takes to
// drain and whether each member's answers arrived in the order asked.
func (e *env) backlog() error {
	n := e.o.backlog
	perUser := e.o.backlogPerUser
	nu := max(1, (n+perUser-1)/perUser)
	r := backlogRun{n: n, users: nu}
	users := e.userSet("r", nu)
	step(fmt.Sprintf("backlog: building %d callbacks from %d members", n, nu))
	shots, err := e.maker.make(n, users, func(i int) string {
		return backlogMark + users[i%nu] + " q=" + strconv.Itoa(i/nu)
	})
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.backlogGot = map[string][]int{}
	e.backlogOther = map[string][]string{}
	e.drops = 0
	e.mu.Unlock()

	g, err := newGate(e.dify.URL())
	if err != nil {
		return err
	}
	defer g.close()
	p, base, err := e.daemonWith(daemonOpts{name: "backlog", db: filepath.Join("backlog", "bridge.db"), llm: g.url, slowLLM: true})
	if err != nil {
		return err
	}
	defer p.stop()
	time.Sleep(time.Second)
	g.hang()
	if r.idle, err = p.memory(); err != nil {
		return err
	}
	f := e.firer(p, e.o.conc)
	step(fmt.Sprintf("backlog: %d questions flat out while the LLM hangs", n))
	r.intake = f.flatOut(shots, 30*time.Minute, false)
	fmt.Fprintln(os.Stderr, "   ", r.intake)
	if r.intake.failed > 0 {
		return fmt.Errorf("backlog callbacks failed: %v", r.intake)
	}
	// Let the daemon settle with everything waiting (GC, queues), then
	// read its high-water mark.
	time.Sleep(3 * time.Second)
	m, err := p.memory()
	if err != nil {
		return err
	}
	r.waitHWM, r.waitRSS = m.HWM, m
	if r.sizeWaiting, err = dirSize(filepath.Join(e.dir, "backlog")); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "    %d waiting (%d held at the LLM): RSS %s (anonymous %s, file-backed %s), VmHWM %s; store %s\n",
		r.intake.ok, g.held.Load(), mb(m.RSS), mb(m.Anon), mb(m.File), mb(m.HWM), mb(r.sizeWaiting))

	step("backlog: the LLM is back (echoes at once); draining")
	start := time.Now()
	g.pass()
	if err := e.drain(base, 15*time.Minute); err != nil {
		return err
	}
	r.drain = time.Since(start)
	// The last answers may still be on their way to WeCom.
	deadline := time.Now().Add(time.Minute)
	for {
		e.mu.Lock()
		got := 0
		for _, ks := range e.backlogGot {
			got += len(ks)
		}
		e.mu.Unlock()
		if got >= r.intake.ok || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.deliver = time.Since(start)
	if m, err = p.memory(); err != nil {
		return err
	}
	r.drainHWM = m.HWM

	e.mu.Lock()
	shown := 0
	for _, u := range users {
		asked := 0
		for k := 0; k*nu+userIndex(u) < n; k++ {
			asked++
		}
		c := checkOrder(e.backlogGot[u], asked)
		r.delivered += c.delivered
		r.outOfOrder += c.outOfOrder
		r.missing += c.missing
		r.dupes += c.dupes
		if !c.ok() && shown < 5 {
			shown++
			fmt.Fprintf(os.Stderr, "    %s: answers to questions %v; other messages %q\n", u, e.backlogGot[u], e.backlogOther[u])
		}
	}
	r.budgetDrops, r.budgetDropsSeen = e.drops, true
	e.mu.Unlock()
	fmt.Fprintf(os.Stderr, "    drained in %v (%.0f answers/s), all at WeCom after %v; VmHWM %s; %d answers delivered, %d out of order, %d missing, %d duplicated, %d dropped over WeCom's per-member limit\n",
		r.drain.Round(100*time.Millisecond), float64(r.intake.ok)/r.drain.Seconds(), r.deliver.Round(100*time.Millisecond), mb(r.drainHWM),
		r.delivered, r.outOfOrder, r.missing, r.dupes, r.budgetDrops)
	e.rep.backlog2 = r
	return nil
}

// orderCheck is what one member received, against what it asked.
type orderCheck struct{ delivered, outOfOrder, missing, dupes int }

func (c orderCheck) ok() bool { return c.outOfOrder == 0 && c.missing == 0 && c.dupes == 0 }

// checkOrder compares the question numbers a member's answers carried, in
// the order WeCom received them, with the asked questions 0..asked-1: each
// must come once, after every earlier one.
func checkOrder(got []int, asked int) orderCheck {
	c := orderCheck{delivered: len(got)}
	seen := map[int]bool{}
	last := -1
	for _, k := range got {
		if seen[k] {
			c.dupes++
			continue
		}
		seen[k] = true
		if k < last {
			c.outOfOrder++
		}
		last = max(last, k)
	}
	for k := range asked {
		if !seen[k] {
			c.missing++
		}
	}
	return c
}

// userIndex is the number in a member name made by userSet.
func userIndex(u string) int {
	i := strings.IndexFunc(u, func(c rune) bool { return c >= '0' && c <= '9' })
	n, _ := strconv.Atoi(u[i:])
	return n
}

// onBacklogAnswer records an answer to a backlog question, by member and
// question number, in delivery order, and what else the member got.
func (e *env) onBacklogAnswer(to, content string) {
	i := strings.Index(content, backlogMark)
	if i < 0 {
		if e.backlogOther != nil && strings.HasPrefix(to, "r") {
			e.backlogOther[to] = append(e.backlogOther[to], content[:min(len(content), 120)])
		}
		return
	}
	rest := content[i+len(backlogMark):]
	user, q, ok := strings.Cut(rest, " q=")
	if !ok {
		return
	}
	end := strings.IndexFunc(q, func(c rune) bool { return c < '0' || c > '9' })
	if end >= 0 {
		q = q[:end]
	}
	k, err := strconv.Atoi(q)
	if err != nil {
		return
	}
	// e.mu is held by the caller.
	if e.backlogGot != nil {
		e.backlogGot[user] = append(e.backlogGot[user], k)
	}
}
