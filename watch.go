package securereg

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"time"

	"go-micro.dev/v4/registry"
	regutil "go-micro.dev/v4/util/registry"
)

// Watch blocking-query settings.
const (
	watchWait       = 5 * time.Minute // Consul's own default for blocking queries
	watchMinBackoff = time.Second
	watchMaxBackoff = 30 * time.Second
)

// svcWatcher watches one service with Consul blocking queries (no polling)
// and turns changes into go-micro results with the plugin's semantics:
// create for a new version, update for a changed one (after a delete for
// the nodes it lost), delete for a version that is gone.
//
// It replaces the plugin's watcher, whose consul/api watch.Plan panics
// with a nil pointer when it is stopped before its first query has
// started, a window any Watch followed quickly by Stop or Close can hit.
type svcWatcher struct {
	r      *Registry
	st     *state
	name   string
	next   chan *registry.Result
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

func newSvcWatcher(r *Registry, st *state, name string) *svcWatcher {
	ctx, cancel := context.WithCancel(context.Background())
	w := &svcWatcher{r: r, st: st, name: name, next: make(chan *registry.Result, 10),
		ctx: ctx, cancel: cancel, done: make(chan struct{})}
	go w.run()
	return w
}

// Next returns the next change, or registry.ErrWatcherStopped once the
// watcher is stopped.
func (w *svcWatcher) Next() (*registry.Result, error) {
	select {
	case <-w.ctx.Done():
		return nil, registry.ErrWatcherStopped
	case res := <-w.next:
		return res, nil
	}
}

// Stop stops the watcher and waits for its goroutine to end. It is
// idempotent and safe to call from any goroutine.
func (w *svcWatcher) Stop() {
	w.once.Do(func() {
		w.cancel()
		<-w.done
		w.r.forget(w)
	})
}

func (w *svcWatcher) run() {
	defer close(w.done)
	var (
		index    uint64
		known    []*registry.Service
		backoff  = watchMinBackoff
		failing  bool
		logger   = w.st.cfg.logger
		stopped  = func() bool { return w.ctx.Err() != nil }
		sleepFor = func(d time.Duration) bool {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-w.ctx.Done():
				return false
			case <-t.C:
				return true
			}
		}
	)
	var last []*healthEntry
	first := true
	for !stopped() {
		q := *w.st.query
		q.WaitIndex, q.WaitTime = index, watchWait
		entries, meta, err := healthQuery(w.st.api, w.name, w.st.connect, q.WithContext(w.ctx))
		if err != nil {
			if stopped() || errors.Is(err, context.Canceled) {
				return
			}
			if !failing {
				logger.Warn("securereg: watch failed; retrying with backoff", "service", w.name, "error", wrapErr(w.st, "watch "+w.name, err).Error())
				failing = true
			}
			if !sleepFor(backoff) {
				return
			}
			backoff = min(2*backoff, watchMaxBackoff)
			continue
		}
		if failing {
			logger.Info("securereg: watch recovered", "service", w.name)
			failing = false
		}
		backoff = watchMinBackoff
		// Like consul/api's watch.Plan: an unchanged index or unchanged
		// data (a timeout, a change elsewhere) is no event.
		unchanged := !first && (meta.LastIndex == index || reflect.DeepEqual(last, entries))
		if meta.LastIndex < index {
			index = 0 // Consul's index went backwards (e.g. a restore): start over
		} else {
			index = meta.LastIndex
		}
		if unchanged {
			continue
		}
		first, last = false, entries
		// Decoded exactly as GetService decodes, so watch results and
		// lookups always agree.
		svcs := tags.services(w.name, entries)
		for _, res := range diffServices(known, svcs) {
			select {
			case w.next <- res:
			case <-w.ctx.Done():
				return
			}
		}
		known = svcs
	}
}

// diffServices returns the results that turn old into new, with the
// plugin's semantics (plugins/registry/consul watcher.go serviceHandler).
func diffServices(old, new []*registry.Service) []*registry.Result {
	var out []*registry.Result
	for _, ns := range new {
		if len(old) == 0 {
			out = append(out, &registry.Result{Action: "create", Service: ns})
			continue
		}
		action := "create"
		for _, os := range old {
			if os.Version != ns.Version {
				continue
			}
			action = "update"
			var gone []*registry.Node
			for _, on := range os.Nodes {
				seen := false
				for _, nn := range ns.Nodes {
					if nn.Id == on.Id {
						seen = true
						break
					}
				}
				if !seen {
					gone = append(gone, on)
				}
			}
			if len(gone) > 0 {
				del := regutil.CopyService(os)
				del.Nodes = gone
				out = append(out, &registry.Result{Action: "delete", Service: del})
			}
		}
		out = append(out, &registry.Result{Action: action, Service: ns})
	}
	for _, os := range old {
		found := false
		for _, ns := range new {
			if ns.Version == os.Version {
				found = true
				break
			}
		}
		if !found {
			out = append(out, &registry.Result{Action: "delete", Service: os})
		}
	}
	return out
}

var _ registry.Watcher = (*svcWatcher)(nil)
