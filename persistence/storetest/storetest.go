package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/persistence"
)

// Run runs the conformance suite against the adapter that open builds.
// open must return a fresh, empty store for the test it is given and close
// it in t.Cleanup; every subtest opens its own, so they run in parallel.
func Run(t *testing.T, open func(t *testing.T) persistence.Store) {
	t.Helper()
	for _, tc := range append([]struct {
		name string
		fn   func(t *testing.T, b *bundle)
	}{
		{"Ping", testPing},
		{"Users", testUsers},
		{"UsersDuplicateEmail", testUsersDuplicateEmail},
		{"APIKeys", testAPIKeys},
		{"APIKeysDuplicateHash", testAPIKeysDuplicateHash},
		{"Sessions", testSessions},
		{"SessionsConcurrentRotate", testSessionsConcurrentRotate},
		{"Workflows", testWorkflows},
		{"WorkflowsList", testWorkflowsList},
		{"WorkflowsOtherUser", testWorkflowsOtherUser},
		{"WorkflowsDelete", testWorkflowsDelete},
		{"WorkflowsConcurrentUpdate", testWorkflowsConcurrentUpdate},
	}, append(executionCases, dataCases...)...) {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, setup(t, open))
		})
	}
}

// bundle is what every case starts with: a store holding two users.
type bundle struct {
	ctx   context.Context
	store persistence.Store
	ann   *persistence.User
	bob   *persistence.User
}

func setup(t *testing.T, open func(t *testing.T) persistence.Store) *bundle {
	t.Helper()
	b := &bundle{ctx: t.Context(), store: open(t)}
	b.ann = b.user(t, "ann@example.com")
	b.bob = b.user(t, "bob@example.com")
	return b
}

// seq makes ids the way callers do (ULIDs): unique, and later ones sort
// after earlier ones.
var seq atomic.Int64

func newID() string { return fmt.Sprintf("01JTEST%013d", seq.Add(1)) }

// when is an awkward time on purpose: not UTC, and finer than a
// millisecond, so the suite checks what adapters make of both.
var when = time.Date(2025, 3, 4, 5, 6, 7, 123456789, time.FixedZone("CET", 3600))

// requireTime checks that got is want at millisecond precision, in UTC.
func requireTime(t *testing.T, want, got time.Time) {
	t.Helper()
	require.Equal(t, time.UTC, got.Location(), "times come back in UTC")
	require.True(t, want.Truncate(time.Millisecond).Equal(got), "want %v, got %v", want, got)
}

func requireCode(t *testing.T, code string, err error) {
	t.Helper()
	require.Error(t, err)
	require.Equal(t, code, events.ErrorCode(err), "error: %v", err)
}

func (b *bundle) user(t *testing.T, email string) *persistence.User {
	t.Helper()
	u := &persistence.User{ID: newID(), Email: email, Name: "User " + email, PasswordHash: "$argon2id$" + email, CreatedAt: when}
	require.NoError(t, b.store.CreateUser(b.ctx, u))
	return u
}

func definition(name string, n int) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"name":%q,"nodes":[{"id":"n%d","type":"input"}],"edges":[]}`, name, n))
}

func (b *bundle) workflow(t *testing.T, owner *persistence.User, name string) *persistence.Workflow {
	t.Helper()
	w := &persistence.Workflow{
		ID: newID(), UserID: owner.ID, Name: name, Description: "about " + name,
		Definition: definition(name, 1), CreatedAt: when,
	}
	require.NoError(t, b.store.CreateWorkflow(b.ctx, w))
	require.Equal(t, 1, w.Version)
	return w
}

func testPing(t *testing.T, b *bundle) {
	require.NoError(t, b.store.Ping(b.ctx))
}

func testUsers(t *testing.T, b *bundle) {
	got, err := b.store.UserByEmail(b.ctx, "ann@example.com")
	require.NoError(t, err)
	requireTime(t, when, got.CreatedAt)
	require.Equal(t, persistence.User{ID: b.ann.ID, Email: "ann@example.com", Name: b.ann.Name,
		PasswordHash: b.ann.PasswordHash, CreatedAt: got.CreatedAt}, *got)

	got, err = b.store.UserByID(b.ctx, b.bob.ID)
	require.NoError(t, err)
	require.Equal(t, "bob@example.com", got.Email)
	requireTime(t, when, got.CreatedAt)

	_, err = b.store.UserByEmail(b.ctx, "nobody@example.com")
	requireCode(t, events.CodeNotFound, err)
	_, err = b.store.UserByID(b.ctx, newID())
	requireCode(t, events.CodeNotFound, err)
}

func testUsersDuplicateEmail(t *testing.T, b *bundle) {
	dup := &persistence.User{ID: newID(), Email: "ann@example.com", Name: "Impostor", PasswordHash: "x", CreatedAt: when}
	requireCode(t, events.CodeConflict, b.store.CreateUser(b.ctx, dup))

	got, err := b.store.UserByEmail(b.ctx, "ann@example.com")
	require.NoError(t, err)
	require.Equal(t, b.ann.ID, got.ID, "the first owner keeps the email")
	_, err = b.store.UserByID(b.ctx, dup.ID)
	requireCode(t, events.CodeNotFound, err)
}

func testAPIKeys(t *testing.T, b *bundle) {
	key := func(u *persistence.User, name string) *persistence.APIKey {
		k := &persistence.APIKey{ID: newID(), UserID: u.ID, Name: name, Prefix: "wft_" + name[:2], Hash: "sha256-" + name, CreatedAt: when}
		require.NoError(t, b.store.CreateAPIKey(b.ctx, k))
		return k
	}
	older := key(b.ann, "ci-old")
	newer := key(b.ann, "ci-new")
	bobs := key(b.bob, "bobs")

	got, err := b.store.APIKeyByHash(b.ctx, "sha256-ci-old")
	require.NoError(t, err)
	requireTime(t, when, got.CreatedAt)
	require.Equal(t, persistence.APIKey{ID: older.ID, UserID: b.ann.ID, Name: "ci-old", Prefix: "wft_ci",
		Hash: "sha256-ci-old", CreatedAt: got.CreatedAt}, *got)

	list, err := b.store.ListAPIKeys(b.ctx, b.ann.ID)
	require.NoError(t, err)
	require.Len(t, list, 2)
	require.Equal(t, []string{newer.ID, older.ID}, []string{list[0].ID, list[1].ID}, "newest first, only hers")

	list, err = b.store.ListAPIKeys(b.ctx, newID())
	require.NoError(t, err)
	require.Empty(t, list)

	// Bob cannot revoke Ann's key, and trying leaves it working.
	requireCode(t, events.CodeNotFound, b.store.DeleteAPIKey(b.ctx, b.bob.ID, older.ID))
	_, err = b.store.APIKeyByHash(b.ctx, older.Hash)
	require.NoError(t, err)

	require.NoError(t, b.store.DeleteAPIKey(b.ctx, b.ann.ID, older.ID))
	_, err = b.store.APIKeyByHash(b.ctx, older.Hash)
	requireCode(t, events.CodeNotFound, err)
	requireCode(t, events.CodeNotFound, b.store.DeleteAPIKey(b.ctx, b.ann.ID, older.ID))

	list, err = b.store.ListAPIKeys(b.ctx, b.ann.ID)
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, newer.ID, list[0].ID)

	_, err = b.store.APIKeyByHash(b.ctx, bobs.Hash)
	require.NoError(t, err)
	_, err = b.store.APIKeyByHash(b.ctx, "sha256-unknown")
	requireCode(t, events.CodeNotFound, err)
}

func testAPIKeysDuplicateHash(t *testing.T, b *bundle) {
	k := &persistence.APIKey{ID: newID(), UserID: b.ann.ID, Name: "a", Prefix: "wft_a", Hash: "sha256-same", CreatedAt: when}
	require.NoError(t, b.store.CreateAPIKey(b.ctx, k))
	dup := &persistence.APIKey{ID: newID(), UserID: b.bob.ID, Name: "b", Prefix: "wft_b", Hash: "sha256-same", CreatedAt: when}
	requireCode(t, events.CodeConflict, b.store.CreateAPIKey(b.ctx, dup))

	got, err := b.store.APIKeyByHash(b.ctx, "sha256-same")
	require.NoError(t, err)
	require.Equal(t, k.ID, got.ID)
}

func testSessions(t *testing.T, b *bundle) {
	expires := when.Add(30 * 24 * time.Hour)
	s := &persistence.Session{ID: newID(), UserID: b.ann.ID, RefreshHash: "r1", CreatedAt: when, ExpiresAt: expires}
	require.NoError(t, b.store.CreateSession(b.ctx, s))

	got, err := b.store.SessionByID(b.ctx, s.ID)
	require.NoError(t, err)
	require.Equal(t, s.ID, got.ID)
	require.Equal(t, b.ann.ID, got.UserID)
	require.Equal(t, "r1", got.RefreshHash)
	requireTime(t, when, got.CreatedAt)
	requireTime(t, expires, got.ExpiresAt)

	// The right old hash works once.
	later := expires.Add(time.Hour + 987654321)
	require.NoError(t, b.store.RotateSession(b.ctx, s.ID, "r1", "r2", later))
	got, err = b.store.SessionByID(b.ctx, s.ID)
	require.NoError(t, err)
	require.Equal(t, "r2", got.RefreshHash)
	requireTime(t, later, got.ExpiresAt)
	requireTime(t, when, got.CreatedAt)

	// Replaying it is a conflict and changes nothing.
	requireCode(t, events.CodeConflict, b.store.RotateSession(b.ctx, s.ID, "r1", "r3", later.Add(time.Hour)))
	got, err = b.store.SessionByID(b.ctx, s.ID)
	require.NoError(t, err)
	require.Equal(t, "r2", got.RefreshHash)
	requireTime(t, later, got.ExpiresAt)

	require.NoError(t, b.store.RotateSession(b.ctx, s.ID, "r2", "r3", later))
	requireCode(t, events.CodeNotFound, b.store.RotateSession(b.ctx, newID(), "r1", "r2", later))

	require.NoError(t, b.store.DeleteSession(b.ctx, s.ID))
	_, err = b.store.SessionByID(b.ctx, s.ID)
	requireCode(t, events.CodeNotFound, err)
	requireCode(t, events.CodeNotFound, b.store.DeleteSession(b.ctx, s.ID))
	requireCode(t, events.CodeNotFound, b.store.RotateSession(b.ctx, s.ID, "r3", "r4", later))
}

// testSessionsConcurrentRotate replays one refresh token from several
// clients at once: exactly one may win.
func testSessionsConcurrentRotate(t *testing.T, b *bundle) {
	s := &persistence.Session{ID: newID(), UserID: b.ann.ID, RefreshHash: "r0", CreatedAt: when, ExpiresAt: when.Add(time.Hour)}
	require.NoError(t, b.store.CreateSession(b.ctx, s))

	const n = 5
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = b.store.RotateSession(b.ctx, s.ID, "r0", fmt.Sprintf("r1-%d", i), when.Add(2*time.Hour))
		})
	}
	wg.Wait()

	winner := -1
	for i, err := range errs {
		if err == nil {
			require.Equal(t, -1, winner, "two rotations with the same old hash succeeded")
			winner = i
			continue
		}
		requireCode(t, events.CodeConflict, err)
	}
	require.NotEqual(t, -1, winner, "no rotation succeeded")
	got, err := b.store.SessionByID(b.ctx, s.ID)
	require.NoError(t, err)
	require.Equal(t, fmt.Sprintf("r1-%d", winner), got.RefreshHash)
}

func testWorkflows(t *testing.T, b *bundle) {
	w := b.workflow(t, b.ann, "etl")

	got, err := b.store.GetWorkflow(b.ctx, b.ann.ID, w.ID)
	require.NoError(t, err)
	require.Equal(t, w.ID, got.ID)
	require.Equal(t, b.ann.ID, got.UserID)
	require.Equal(t, "etl", got.Name)
	require.Equal(t, "about etl", got.Description)
	require.Equal(t, 1, got.Version)
	require.Equal(t, string(definition("etl", 1)), string(got.Definition), "definition kept byte for byte")
	requireTime(t, when, got.CreatedAt)
	requireTime(t, when, got.UpdatedAt)

	up := &persistence.Workflow{ID: w.ID, UserID: b.ann.ID, Name: "etl2", Description: "about etl2", Definition: definition("etl2", 2)}
	before := time.Now().Add(-time.Second)
	require.NoError(t, b.store.UpdateWorkflow(b.ctx, up))
	require.Equal(t, 2, up.Version)
	requireTime(t, when, up.CreatedAt)
	require.WithinRange(t, up.UpdatedAt, before, time.Now().Add(time.Second))

	got, err = b.store.GetWorkflow(b.ctx, b.ann.ID, w.ID)
	require.NoError(t, err)
	require.Equal(t, 2, got.Version)
	require.Equal(t, "etl2", got.Name)
	require.Equal(t, "about etl2", got.Description)
	require.Equal(t, string(definition("etl2", 2)), string(got.Definition))
	requireTime(t, when, got.CreatedAt)
	requireTime(t, up.UpdatedAt, got.UpdatedAt)

	v1, err := b.store.GetWorkflowVersion(b.ctx, b.ann.ID, w.ID, 1)
	require.NoError(t, err)
	require.Equal(t, 1, v1.Version)
	require.Equal(t, "etl", v1.Name)
	require.Equal(t, "about etl", v1.Description)
	require.Equal(t, string(definition("etl", 1)), string(v1.Definition))
	requireTime(t, when, v1.CreatedAt)
	requireTime(t, when, v1.UpdatedAt)

	v2, err := b.store.GetWorkflowVersion(b.ctx, b.ann.ID, w.ID, 2)
	require.NoError(t, err)
	require.Equal(t, *got, *v2)

	for _, v := range []int{0, 3, -1} {
		_, err = b.store.GetWorkflowVersion(b.ctx, b.ann.ID, w.ID, v)
		requireCode(t, events.CodeNotFound, err)
	}
	_, err = b.store.GetWorkflow(b.ctx, b.ann.ID, newID())
	requireCode(t, events.CodeNotFound, err)
	requireCode(t, events.CodeNotFound, b.store.UpdateWorkflow(b.ctx,
		&persistence.Workflow{ID: newID(), UserID: b.ann.ID, Name: "x", Definition: definition("x", 1)}))

	dup := &persistence.Workflow{ID: w.ID, UserID: b.ann.ID, Name: "dup", Definition: definition("dup", 1), CreatedAt: when}
	requireCode(t, events.CodeConflict, b.store.CreateWorkflow(b.ctx, dup))
}

func testWorkflowsList(t *testing.T, b *bundle) {
	var ids []string
	for i := range 5 {
		ids = append(ids, b.workflow(t, b.ann, fmt.Sprintf("wf%d", i)).ID)
	}
	b.workflow(t, b.bob, "bobs")
	// The listing shows the latest version.
	require.NoError(t, b.store.UpdateWorkflow(b.ctx, &persistence.Workflow{
		ID: ids[1], UserID: b.ann.ID, Name: "wf1 v2", Definition: definition("wf1", 2)}))

	var (
		seen   []string
		cursor string
		pages  int
	)
	for {
		page, next, err := b.store.ListWorkflows(b.ctx, b.ann.ID, persistence.Page{Limit: 2, Cursor: cursor})
		require.NoError(t, err)
		pages++
		require.LessOrEqual(t, len(page), 2)
		for _, w := range page {
			require.Equal(t, b.ann.ID, w.UserID)
			if w.ID == ids[1] {
				require.Equal(t, 2, w.Version)
				require.Equal(t, "wf1 v2", w.Name)
				require.Equal(t, string(definition("wf1", 2)), string(w.Definition))
			} else {
				require.Equal(t, 1, w.Version)
			}
			requireTime(t, when, w.CreatedAt)
			seen = append(seen, w.ID)
		}
		if next == "" {
			break
		}
		require.Less(t, pages, 10, "pagination does not end")
		cursor = next
	}
	require.Equal(t, 3, pages)
	require.Equal(t, []string{ids[4], ids[3], ids[2], ids[1], ids[0]}, seen, "newest first, each once")

	// A page that ends exactly at the last row knows there is no more.
	page, next, err := b.store.ListWorkflows(b.ctx, b.ann.ID, persistence.Page{Limit: 5})
	require.NoError(t, err)
	require.Len(t, page, 5)
	require.Empty(t, next)

	// Limit 0 means the default page size; out-of-range limits are clamped.
	page, next, err = b.store.ListWorkflows(b.ctx, b.ann.ID, persistence.Page{})
	require.NoError(t, err)
	require.Len(t, page, 5)
	require.Empty(t, next)
	page, _, err = b.store.ListWorkflows(b.ctx, b.ann.ID, persistence.Page{Limit: 1000})
	require.NoError(t, err)
	require.Len(t, page, 5)
	page, next, err = b.store.ListWorkflows(b.ctx, b.ann.ID, persistence.Page{Limit: -3})
	require.NoError(t, err)
	require.Len(t, page, 1)
	require.Equal(t, ids[4], next)
}

func testWorkflowsOtherUser(t *testing.T, b *bundle) {
	w := b.workflow(t, b.ann, "private")

	_, err := b.store.GetWorkflow(b.ctx, b.bob.ID, w.ID)
	requireCode(t, events.CodeNotFound, err)
	_, err = b.store.GetWorkflowVersion(b.ctx, b.bob.ID, w.ID, 1)
	requireCode(t, events.CodeNotFound, err)
	requireCode(t, events.CodeNotFound, b.store.UpdateWorkflow(b.ctx,
		&persistence.Workflow{ID: w.ID, UserID: b.bob.ID, Name: "hijack", Definition: definition("hijack", 2)}))
	requireCode(t, events.CodeNotFound, b.store.DeleteWorkflow(b.ctx, b.bob.ID, w.ID))
	list, next, err := b.store.ListWorkflows(b.ctx, b.bob.ID, persistence.Page{})
	require.NoError(t, err)
	require.Empty(t, list)
	require.Empty(t, next)

	// Nothing Bob tried touched it.
	got, err := b.store.GetWorkflow(b.ctx, b.ann.ID, w.ID)
	require.NoError(t, err)
	require.Equal(t, 1, got.Version)
	require.Equal(t, "private", got.Name)
}

func testWorkflowsDelete(t *testing.T, b *bundle) {
	w := b.workflow(t, b.ann, "doomed")
	keep := b.workflow(t, b.ann, "kept")

	require.NoError(t, b.store.DeleteWorkflow(b.ctx, b.ann.ID, w.ID))
	_, err := b.store.GetWorkflow(b.ctx, b.ann.ID, w.ID)
	requireCode(t, events.CodeNotFound, err)
	requireCode(t, events.CodeNotFound, b.store.DeleteWorkflow(b.ctx, b.ann.ID, w.ID))
	requireCode(t, events.CodeNotFound, b.store.UpdateWorkflow(b.ctx,
		&persistence.Workflow{ID: w.ID, UserID: b.ann.ID, Name: "again", Definition: definition("again", 2)}))

	// Executions that ran it can still read what they ran, its owner only.
	v1, err := b.store.GetWorkflowVersion(b.ctx, b.ann.ID, w.ID, 1)
	require.NoError(t, err)
	require.Equal(t, "doomed", v1.Name)
	require.Equal(t, string(definition("doomed", 1)), string(v1.Definition))
	_, err = b.store.GetWorkflowVersion(b.ctx, b.bob.ID, w.ID, 1)
	requireCode(t, events.CodeNotFound, err)
	_, err = b.store.GetWorkflowVersion(b.ctx, b.ann.ID, w.ID, 2)
	requireCode(t, events.CodeNotFound, err)

	list, next, err := b.store.ListWorkflows(b.ctx, b.ann.ID, persistence.Page{})
	require.NoError(t, err)
	require.Empty(t, next)
	require.Len(t, list, 1)
	require.Equal(t, keep.ID, list[0].ID)
}

// testWorkflowsConcurrentUpdate races updates of one workflow: every one
// must land, as its own consecutive version.
func testWorkflowsConcurrentUpdate(t *testing.T, b *bundle) {
	w := b.workflow(t, b.ann, "hot")

	const n = 5
	versions := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			up := &persistence.Workflow{ID: w.ID, UserID: b.ann.ID, Name: fmt.Sprintf("hot-%d", i), Definition: definition("hot", 100+i)}
			if err := b.store.UpdateWorkflow(b.ctx, up); err != nil {
				t.Errorf("update %d: %v", i, err)
				return
			}
			versions[i] = up.Version
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	got, err := b.store.GetWorkflow(b.ctx, b.ann.ID, w.ID)
	require.NoError(t, err)
	require.Equal(t, n+1, got.Version)

	// Each update got a distinct version holding exactly its own content.
	byVersion := map[int]int{}
	for i, v := range versions {
		require.NotContains(t, byVersion, v, "two updates got version %d", v)
		byVersion[v] = i
	}
	for v := 2; v <= n+1; v++ {
		i, ok := byVersion[v]
		require.True(t, ok, "no update got version %d", v)
		wv, err := b.store.GetWorkflowVersion(b.ctx, b.ann.ID, w.ID, v)
		require.NoError(t, err)
		require.Equal(t, v, wv.Version)
		require.Equal(t, fmt.Sprintf("hot-%d", i), wv.Name)
		require.Equal(t, string(definition("hot", 100+i)), string(wv.Definition))
		requireTime(t, when, wv.CreatedAt)
	}
	v1, err := b.store.GetWorkflowVersion(b.ctx, b.ann.ID, w.ID, 1)
	require.NoError(t, err)
	require.Equal(t, "hot", v1.Name)
}
