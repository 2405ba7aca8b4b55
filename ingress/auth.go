package ingress

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/nats-io/nats.go"
	"github.com/oklog/ulid/v2"
	"golang.org/x/crypto/bcrypt"

	"github.com/weftdev/weft/events"
	"github.com/weftdev/weft/persistence"
	"github.com/weftdev/weft/persistence/redis"
)

const (
	tokenIssuer   = "weft"
	tokenAudience = "weft-api"
	// APIKeyPrefix starts every API key, so a bearer token can be told
	// apart from a JWT without trying to parse it.
	APIKeyPrefix = "weft_"
	// sessionCacheTTL is how long an authenticated session or API key is
	// served from Redis before the store is asked again.
	sessionCacheTTL = time.Hour
)

// Principal is the authenticated caller of a request.
type Principal struct {
	UserID    string `json:"userId"`
	SessionID string `json:"sessionId,omitempty"`
	APIKeyID  string `json:"apiKeyId,omitempty"`
}

// AuthConfig sets the token lifetimes and password cost.
type AuthConfig struct {
	// Secret signs access tokens (HS256). At least 32 bytes.
	Secret []byte
	// AccessTTL is the lifetime of an access token. Default 15 minutes.
	AccessTTL time.Duration
	// RefreshTTL is the lifetime of a session's refresh token. Default 30 days.
	RefreshTTL time.Duration
	// BcryptCost is the bcrypt cost of password hashes. Default bcrypt.DefaultCost.
	BcryptCost int
}

// Auth issues and checks credentials. Sessions and API keys are cached in
// Redis for an hour; when Redis is down they are read from the store.
// Once Listen has subscribed to revocations, a process also keeps the
// credentials it checked for localAuthTTL, so a busy caller costs no round
// trip at all.
type Auth struct {
	cfg   AuthConfig
	store persistence.Store
	cache *redis.Cache
	log   *slog.Logger
	now   func() time.Time
	// local is the in-process layer, nil until Listen. revocations counts
	// the revocations heard: a check that read a credential while one was
	// heard does not keep it, as what it read may be the revoked one.
	local       *lru.Cache[string, localPrincipal]
	revocations atomic.Uint64
	nc          *nats.Conn
	// written is when this process last wrote each credential to Redis,
	// for rewriteWindow.
	mu      sync.Mutex
	written map[string]time.Time
	// macKey MACs the principals cached in Redis and the refresh tokens
	// (see mac).
	macKey []byte
	// dummyHash is compared against when an email is unknown, so a login
	// takes as long whether or not the account exists.
	dummyHash []byte
}

// NewAuth returns the credential service.
func NewAuth(cfg AuthConfig, store persistence.Store, cache *redis.Cache, log *slog.Logger, now func() time.Time) (*Auth, error) {
	if len(cfg.Secret) < 32 {
		return nil, errors.New("auth: the JWT secret must be at least 32 bytes")
	}
	if cfg.AccessTTL == 0 {
		cfg.AccessTTL = 15 * time.Minute
	}
	if cfg.RefreshTTL == 0 {
		cfg.RefreshTTL = 30 * 24 * time.Hour
	}
	if cfg.BcryptCost == 0 {
		cfg.BcryptCost = bcrypt.DefaultCost
	}
	dummy, err := bcrypt.GenerateFromPassword([]byte("not a password of anyone"), cfg.BcryptCost)
	if err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	// The key of the MACs, derived so that it is not the JWT secret itself.
	derive := hmac.New(sha256.New, cfg.Secret)
	derive.Write([]byte("weft auth mac v1"))
	return &Auth{cfg: cfg, store: store, cache: cache, log: log, now: now, dummyHash: dummy, written: map[string]time.Time{},
		macKey: derive.Sum(nil)}, nil
}

// subjectAuthRevoked tells every process that a credential was revoked
// (an API key deleted, a session ended): its cache key is the payload.
const subjectAuthRevoked = "weft.cache.auth"

// localAuthTTL bounds how long a process trusts its own copy of a checked
// credential. A revocation is heard over core NATS in well under a
// millisecond and drops the copy at once; the TTL covers a process that
// missed it (NATS reconnecting), which may accept a revoked credential for
// at most this long.
const localAuthTTL = 2 * time.Second

// localPrincipal is a checked credential and when it was checked.
type localPrincipal struct {
	p  Principal
	at time.Time
}

// Listen subscribes to revocations and turns on the in-process layer. The
// returned func unsubscribes and turns it off. Call it once.
func (a *Auth) Listen(nc *nats.Conn) (stop func(), err error) {
	local, err := lru.New[string, localPrincipal](10_000)
	if err != nil {
		return nil, err
	}
	sub, err := nc.Subscribe(subjectAuthRevoked, func(m *nats.Msg) { a.heard(string(m.Data)) })
	if err != nil {
		return nil, err
	}
	a.nc, a.local = nc, local
	return func() {
		_ = sub.Unsubscribe()
		a.revocations.Add(1)
		local.Purge()
	}, nil
}

// heard drops a revoked credential from this process.
//
// A process that wrote the credential to Redis shortly before deletes it
// there again: its write may have come after the revoker's delete.
func (a *Auth) heard(key string) {
	a.revocations.Add(1)
	a.local.Remove(key)
	a.mu.Lock()
	at, wrote := a.written[key]
	a.pruneWritten()
	a.mu.Unlock()
	if wrote && time.Since(at) < rewriteWindow && a.cache != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = a.cache.Del(ctx, key)
	}
}

// Tokens is what register, login and refresh answer.
type Tokens struct {
	User         *persistence.User
	Token        string
	RefreshToken string
	ExpiresIn    int
}

// Register creates an account and logs it in.
func (a *Auth) Register(ctx context.Context, email, password, name string) (*Tokens, error) {
	hash, err := bcrypt.GenerateFromPassword([]byte(password), a.cfg.BcryptCost)
	if err != nil {
		return nil, err
	}
	u := &persistence.User{
		ID: newID(), Email: strings.ToLower(email), Name: name,
		PasswordHash: string(hash), CreatedAt: a.now().UTC(),
	}
	if err := a.store.CreateUser(ctx, u); err != nil {
		if events.IsConflict(err) {
			return nil, events.Errorf(events.CodeConflict, "an account with this email exists")
		}
		return nil, err
	}
	return a.newSession(ctx, u)
}

// Login checks a password and opens a session.
func (a *Auth) Login(ctx context.Context, email, password string) (*Tokens, error) {
	u, err := a.store.UserByEmail(ctx, strings.ToLower(email))
	if err != nil && !events.IsNotFound(err) {
		return nil, err
	}
	hash := a.dummyHash
	if u != nil {
		hash = []byte(u.PasswordHash)
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(password)) != nil || u == nil {
		return nil, events.Errorf(events.CodeUnauthorized, "wrong email or password")
	}
	return a.newSession(ctx, u)
}

// Refresh trades a refresh token for a new pair. The old refresh token stops
// working: the session's stored hash is swapped atomically, so of two
// concurrent refreshes with one token only one succeeds. A refresh token
// this deployment issued (its MAC says so) that is no longer the
// session's was used before: someone holds a copy, so the whole session
// ends, for the thief and the owner alike (the owner logs in again).
func (a *Auth) Refresh(ctx context.Context, refreshToken string) (*Tokens, error) {
	bad := events.Errorf(events.CodeUnauthorized, "the refresh token is not valid")
	sid, _, ok := strings.Cut(refreshToken, ".")
	if !ok || sid == "" {
		return nil, bad
	}
	issued := a.issuedRefresh(refreshToken)
	s, err := a.store.SessionByID(ctx, sid)
	if events.IsNotFound(err) {
		return nil, bad
	}
	if err != nil {
		return nil, err
	}
	if !a.now().Before(s.ExpiresAt) {
		return nil, bad
	}
	secret, err := randomToken(32)
	if err != nil {
		return nil, err
	}
	next := a.refreshToken(sid, secret)
	expires := a.now().Add(a.cfg.RefreshTTL).UTC()
	switch err := a.store.RotateSession(ctx, sid, hashSecret(refreshToken), hashSecret(next), expires); {
	case events.IsConflict(err) && issued:
		a.log.Warn("a used refresh token was presented again; its session is ended", "session", sid)
		if err := a.Logout(ctx, sid); err != nil {
			return nil, err
		}
		return nil, bad
	case events.IsConflict(err), events.IsNotFound(err):
		return nil, bad
	case err != nil:
		return nil, err
	}
	u, err := a.store.UserByID(ctx, s.UserID)
	if err != nil {
		return nil, err
	}
	access, err := a.accessToken(u.ID, sid)
	if err != nil {
		return nil, err
	}
	return &Tokens{User: u, Token: access, RefreshToken: next, ExpiresIn: int(a.cfg.AccessTTL / time.Second)}, nil
}

// refreshToken is the refresh token of session sid with a random secret:
// "<sid>.<secret>.<mac>", the MAC showing this deployment issued it.
func (a *Auth) refreshToken(sid, secret string) string {
	t := sid + "." + secret
	return t + "." + base64.RawURLEncoding.EncodeToString(a.mac("refresh", t))
}

// issuedRefresh reports whether this deployment issued token.
func (a *Auth) issuedRefresh(token string) bool {
	i := strings.LastIndexByte(token, '.')
	if i < 0 {
		return false
	}
	mac, err := base64.RawURLEncoding.DecodeString(token[i+1:])
	return err == nil && hmac.Equal(mac, a.mac("refresh", token[:i]))
}

// mac is the MAC of parts, for purpose, under a key derived from the JWT
// secret, which neither Redis nor the store ever see.
func (a *Auth) mac(purpose string, parts ...string) []byte {
	m := hmac.New(sha256.New, a.macKey)
	m.Write([]byte(purpose))
	for _, s := range parts {
		m.Write([]byte{0})
		m.Write([]byte(s))
	}
	return m.Sum(nil)
}

// Logout ends a session: its access tokens and refresh token stop working.
func (a *Auth) Logout(ctx context.Context, sessionID string) error {
	if err := a.store.DeleteSession(ctx, sessionID); err != nil && !events.IsNotFound(err) {
		return err
	}
	a.forget(ctx, "session:"+sessionID)
	return nil
}

func (a *Auth) newSession(ctx context.Context, u *persistence.User) (*Tokens, error) {
	sid := newID()
	secret, err := randomToken(32)
	if err != nil {
		return nil, err
	}
	refresh := a.refreshToken(sid, secret)
	now := a.now().UTC()
	s := &persistence.Session{ID: sid, UserID: u.ID, RefreshHash: hashSecret(refresh), CreatedAt: now, ExpiresAt: now.Add(a.cfg.RefreshTTL)}
	if err := a.store.CreateSession(ctx, s); err != nil {
		return nil, err
	}
	access, err := a.accessToken(u.ID, sid)
	if err != nil {
		return nil, err
	}
	return &Tokens{User: u, Token: access, RefreshToken: refresh, ExpiresIn: int(a.cfg.AccessTTL / time.Second)}, nil
}

type accessClaims struct {
	SessionID string `json:"sid"`
	jwt.RegisteredClaims
}

func (a *Auth) accessToken(userID, sessionID string) (string, error) {
	now := a.now()
	claims := accessClaims{
		SessionID: sessionID,
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    tokenIssuer,
			Subject:   userID,
			Audience:  jwt.ClaimStrings{tokenAudience},
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(a.cfg.AccessTTL)),
			ID:        newID(),
		},
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(a.cfg.Secret)
}

// Authenticate checks a bearer credential: an API key (it starts with
// APIKeyPrefix) or a JWT access token whose session is still open.
func (a *Auth) Authenticate(ctx context.Context, credential string) (*Principal, error) {
	if credential == "" {
		return nil, events.Errorf(events.CodeUnauthorized, "authentication required")
	}
	if strings.HasPrefix(credential, APIKeyPrefix) {
		return a.authenticateKey(ctx, credential)
	}
	return a.authenticateToken(ctx, credential)
}

func (a *Auth) authenticateToken(ctx context.Context, token string) (*Principal, error) {
	var claims accessClaims
	_, err := jwt.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return a.cfg.Secret, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithIssuer(tokenIssuer),
		jwt.WithAudience(tokenAudience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(a.now),
	)
	if err != nil || claims.Subject == "" || claims.SessionID == "" {
		return nil, events.Errorf(events.CodeUnauthorized, "the token is not valid")
	}
	p := &Principal{UserID: claims.Subject, SessionID: claims.SessionID}
	key := "session:" + claims.SessionID
	heard := a.revocations.Load()
	var cached Principal
	if a.lookup(ctx, key, &cached) && cached.UserID == p.UserID {
		return p, nil
	}
	s, err := a.store.SessionByID(ctx, claims.SessionID)
	if events.IsNotFound(err) || (err == nil && (s.UserID != p.UserID || !a.now().Before(s.ExpiresAt))) {
		return nil, events.Errorf(events.CodeUnauthorized, "the session has ended")
	}
	if err != nil {
		return nil, err
	}
	a.remember(ctx, key, p, minDuration(sessionCacheTTL, s.ExpiresAt.Sub(a.now())), heard)
	return p, nil
}

func (a *Auth) authenticateKey(ctx context.Context, key string) (*Principal, error) {
	hash := hashSecret(key)
	ckey := "apikey:" + hash
	heard := a.revocations.Load()
	var p Principal
	if a.lookup(ctx, ckey, &p) {
		return &p, nil
	}
	k, err := a.store.APIKeyByHash(ctx, hash)
	if events.IsNotFound(err) {
		return nil, events.Errorf(events.CodeUnauthorized, "the API key is not valid")
	}
	if err != nil {
		return nil, err
	}
	p = Principal{UserID: k.UserID, APIKeyID: k.ID}
	a.remember(ctx, ckey, &p, sessionCacheTTL, heard)
	return &p, nil
}

// CreateAPIKey makes a key for the user; the secret is returned only here.
func (a *Auth) CreateAPIKey(ctx context.Context, userID, name string) (*persistence.APIKey, string, error) {
	secret, err := randomToken(32)
	if err != nil {
		return nil, "", err
	}
	key := APIKeyPrefix + secret
	k := &persistence.APIKey{
		ID: newID(), UserID: userID, Name: name, Prefix: key[:len(APIKeyPrefix)+6],
		Hash: hashSecret(key), CreatedAt: a.now().UTC(),
	}
	if err := a.store.CreateAPIKey(ctx, k); err != nil {
		return nil, "", err
	}
	return k, key, nil
}

// DeleteAPIKey revokes a key. The cached entry is dropped at once, so every
// process stops accepting the key on its next request.
func (a *Auth) DeleteAPIKey(ctx context.Context, userID, id string) error {
	keys, err := a.store.ListAPIKeys(ctx, userID)
	if err != nil {
		return err
	}
	var hash string
	for _, k := range keys {
		if k.ID == id {
			hash = k.Hash
		}
	}
	if err := a.store.DeleteAPIKey(ctx, userID, id); err != nil {
		return err
	}
	if hash != "" {
		a.forget(ctx, "apikey:"+hash)
	}
	return nil
}

// lookup reads a cached principal, in process first, then in Redis; any
// Redis failure is a miss. A principal found in Redis is kept in process
// unless a revocation was heard meanwhile.
func (a *Auth) lookup(ctx context.Context, key string, p *Principal) bool {
	now := a.now()
	if a.local != nil {
		if e, ok := a.local.Get(key); ok && now.Sub(e.at) < localAuthTTL {
			*p = e.p
			return true
		}
	}
	if a.cache == nil {
		return false
	}
	heard := a.revocations.Load()
	var e sealedPrincipal
	ok, err := a.cache.Get(ctx, key, &e)
	if err != nil && !errors.Is(err, redis.ErrDown) {
		a.log.Warn("cache read failed; using the store", "err", err)
	}
	if !ok {
		return false
	}
	if !hmac.Equal(e.MAC, a.seal(key, &e.Principal)) {
		// Not written by a process with our secret: someone with access
		// to Redis, or a deployment with another secret on one prefix.
		a.log.Warn("cached credential failed its check; ignoring it", "cacheKey", strings.SplitN(key, ":", 2)[0])
		return false
	}
	*p = e.Principal
	a.keepLocal(key, p, now, heard)
	return true
}

// sealedPrincipal is a principal as cached in Redis, with the MAC that
// shows this deployment wrote it: Redis is not trusted to say who a
// caller is.
type sealedPrincipal struct {
	Principal
	MAC []byte `json:"mac"`
}

// seal is the MAC of principal p cached under key.
func (a *Auth) seal(key string, p *Principal) []byte {
	return a.mac("cache", key, p.UserID, p.SessionID, p.APIKeyID)
}

// keepLocal keeps a principal read at now in process, unless a revocation
// was heard since heard was loaded.
func (a *Auth) keepLocal(key string, p *Principal, now time.Time, heard uint64) {
	if a.local == nil || a.revocations.Load() != heard {
		return
	}
	a.local.Add(key, localPrincipal{p: *p, at: now})
	// A revocation heard between the check and the Add would have
	// removed nothing: look again, now that the copy is in place.
	if a.revocations.Load() != heard {
		a.local.Remove(key)
	}
}

// remember caches a principal read from the store, in process and in
// Redis, unless this process heard a revocation since heard was loaded:
// what it read may be the revoked credential.
func (a *Auth) remember(ctx context.Context, key string, p *Principal, ttl time.Duration, heard uint64) {
	a.keepLocal(key, p, a.now(), heard)
	if a.cache == nil || ttl <= 0 || a.revocations.Load() != heard {
		return
	}
	if err := a.cache.Set(ctx, key, sealedPrincipal{Principal: *p, MAC: a.seal(key, p)}, ttl); err != nil {
		a.log.Warn("cache write failed", "err", err)
		return
	}
	// The write may have landed after a revoker's delete: if this process
	// hears of that revocation soon, it deletes the key again (see heard).
	a.mu.Lock()
	a.written[key] = time.Now()
	if len(a.written) > 1024 {
		a.pruneWritten()
	}
	a.mu.Unlock()
}

// pruneWritten forgets the Redis writes older than rewriteWindow; a.mu is
// held.
func (a *Auth) pruneWritten() {
	for k, t := range a.written {
		if time.Since(t) > rewriteWindow {
			delete(a.written, k)
		}
	}
}

// forget drops a revoked credential from every layer of every process.
//
// Redis first: a process that hears of the revocation and looks again
// must not find the credential there. Then this process's own copy, then
// the others'.
func (a *Auth) forget(ctx context.Context, key string) {
	if a.cache != nil {
		if err := a.cache.Del(ctx, key); err != nil {
			a.log.Error("cache delete failed; a revoked credential may be served from Redis until its TTL", "err", err)
		}
	}
	if a.local == nil {
		return
	}
	a.heard(key)
	if err := a.nc.Publish(subjectAuthRevoked, []byte(key)); err == nil {
		_ = a.nc.Flush()
	} else {
		a.log.Error("revocation not announced; other processes may accept the credential for a little longer", "err", err, "within", localAuthTTL)
	}
}

// hashSecret is the stored form of a high-entropy secret (API key or
// refresh token). These carry 256 random bits, so a fast hash is enough and
// keeps every authenticated request cheap; passwords use bcrypt instead.
func hashSecret(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func randomToken(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// newID returns a time-ordered unique id (ULID).
func newID() string { return strings.ToLower(ulid.Make().String()) }

func minDuration(a, b time.Duration) time.Duration {
	if a < b {
		return a
	}
	return b
}
