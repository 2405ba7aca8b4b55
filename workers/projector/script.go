package projector

import goredis "github.com/redis/go-redis/v9"

// applyScript applies a batch of events in one round trip, atomically with
// the dedupe state, so a batch is counted wholly or not at all.
//
// KEYS[1] is the marker: without it the counters are being rebuilt and the
// script refuses the batch (returns -1) rather than count into a keyspace
// that is about to be swept.
//
// ARGV[1] is the key namespace, ARGV[2] and ARGV[3] the phase hash's TTL in
// seconds while open and once ended. Then, per event, nine fields:
// execution id, kind, user id, workflow id, duration in microseconds ("" if
// none), histogram bucket, finishing minute ("" outside the metrics
// horizon), that minute bucket's expiry (Unix seconds), the number of node
// transitions; then three fields per node transition: id, type, status.
// It returns the number of events that changed anything.
//
// Keys are built here from the namespace rather than passed in KEYS: the
// user of a rejected event is known only from the phase hash. On Redis
// Cluster, give the prefix a hash tag ("{weft}:") so every key shares a
// slot.
//
// Redis calls are what a script spends its time on, so it makes few: the
// events of one execution mostly arrive together, and its phase hash is
// read once per batch (one HMGET with every field the batch needs) and
// written once (HSET, EXPIRE); counter increments are summed in Lua tables
// and written at the end with two calls per hash (HMGET, HSET), and a
// batch mostly touches a few users, so thousands of increments become tens
// of calls.
var applyScript = goredis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local P, openTTL, doneTTL = ARGV[1], ARGV[2], ARGV[3]

-- Pass 1: the executions of the batch, and which phase fields to read.
local execs, order, evs = {}, {}, {}
local i, n = 4, #ARGV
while i <= n do
  local ex, nn = ARGV[i], tonumber(ARGV[i + 8])
  local x = execs[ex]
  if not x then
    x = {names = {'u', 'w', 'q', 's', 't'}, at = {}, upd = {}, dirty = false}
    execs[ex] = x
    order[#order + 1] = ex
  end
  evs[#evs + 1] = {i, nn, x}
  for j = 0, nn - 1 do
    local id = ARGV[i + 9 + 3 * j]
    if not x.at[id] then
      x.names[#x.names + 1] = 'n:' .. id
      x.at[id] = #x.names
    end
  end
  i = i + 9 + 3 * nn
end
for _, ex in ipairs(order) do
  local x = execs[ex]
  local f = redis.call('HMGET', P .. 'x:' .. ex, unpack(x.names))
  x.u, x.w, x.q, x.s, x.t = f[1], f[2], f[3], f[4], f[5]
  x.seen = {}
  for id, k in pairs(x.at) do x.seen[id] = f[k] end
end

local incr, sets, expat = {}, {}, {}
local function add(key, field, v)
  local h = incr[key]
  if not h then h = {}; incr[key] = h end
  h[field] = (h[field] or 0) + v
end
-- The gauge an execution's flags put it in: 'queued' or 'running'; or
-- 'ended' and false (nothing seen), which are not gauges.
local function phase(q, s, t)
  if t then return 'ended' elseif s then return 'running' elseif q then return 'queued' end
  return false
end
local function gauge(g) return g == 'queued' or g == 'running' end

-- Pass 2: each event against its execution's phase, in batch order.
local changed = 0
for _, e in ipairs(evs) do
  local i, nn, x = e[1], e[2], e[3]
  local kind, user, wf = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local dus, bucket, minute, mexp = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
  local u0, w0, q0, s0, t0 = x.u, x.w, x.q, x.s, x.t
  local u1 = u0 or (user ~= '' and user)
  local w1 = w0 or (wf ~= '' and wf)
  local q1, s1, t1 = q0, s0, t0
  if kind == 'queued' then q1 = '1'
  elseif kind == 'started' or kind == 'node' then s1 = '1'
  else t1 = t0 or kind end

  local upd, ch = x.upd, false
  if u1 and not u0 then upd.u = u1; x.u = u1; ch = true end
  if w1 and not w0 then upd.w = w1; x.w = w1; ch = true end
  if q1 and not q0 then upd.q = '1'; x.q = '1'; ch = true end
  if s1 and not s0 then upd.s = '1'; x.s = '1'; ch = true end
  if t1 and not t0 then upd.t = t1; x.t = t1; ch = true end

  -- Without a user (a rejected event of an execution never seen) there is
  -- nobody to count for; the flags wait for an event that names the user.
  if u1 then
    local uk = P .. 'u:' .. u1
    local wk = w1 and (P .. 'w:' .. u1 .. ':' .. w1)
    if not u0 then
      add(uk, 'total', 1)
      if wk then
        add(wk, 'total', 1)
        local sk = P .. 'wfs:' .. u1
        sets[sk] = sets[sk] or {}
        sets[sk][w1] = true
      end
    end
    -- What was counted before this event (nothing if it had no user) and
    -- what is counted after: the gauges move by the difference.
    local g0 = u0 and phase(q0, s0, t0)
    local g1 = phase(q1, s1, t1)
    if g0 ~= g1 then
      if gauge(g0) then add(uk, g0, -1) end
      if gauge(g1) then add(uk, g1, 1) end
    end
    if t1 and not (u0 and t0) then
      add(uk, t1, 1)
      if wk then add(wk, t1, 1) end
      -- The duration and the minute belong to the event that ended it.
      if kind == t1 and not t0 then
        if dus ~= '' then
          local d = tonumber(dus)
          add(uk, 'dsum', d); add(uk, 'dn', 1)
          if wk then add(wk, 'dsum', d); add(wk, 'dn', 1); add(wk, 'h' .. bucket, 1) end
        end
        if minute ~= '' and t1 ~= 'rejected' then
          local mk = P .. 'm:' .. u1 .. ':' .. minute
          add(mk, 'n', 1); add(mk, t1, 1)
          if dus ~= '' then
            add(mk, 'dsum', tonumber(dus)); add(mk, 'dn', 1); add(mk, 'h' .. bucket, 1)
          end
          expat[mk] = mexp
        end
      end
    end
    -- Each node is counted once per execution, whatever reports it again.
    for j = 0, nn - 1 do
      local b = i + 9 + 3 * j
      local id = ARGV[b]
      if not x.seen[id] then
        local st = ARGV[b + 2]
        x.seen[id] = '1'
        upd['n:' .. id] = '1'
        ch = true
        add(uk, 'ns:' .. st, 1)
        if st == 'completed' or st == 'failed' then
          add(uk, 'nodes', 1); add(uk, 'nt:' .. ARGV[b + 1], 1)
        end
      end
    end
  end
  if ch then x.dirty = true; changed = changed + 1 end
end

for _, ex in ipairs(order) do
  local x = execs[ex]
  if x.dirty then
    local kv = {}
    for k, v in pairs(x.upd) do kv[#kv + 1] = k; kv[#kv + 1] = v end
    local ek = P .. 'x:' .. ex
    redis.call('HSET', ek, unpack(kv))
    if x.t then redis.call('EXPIRE', ek, doneTTL) else redis.call('EXPIRE', ek, openTTL) end
  end
end
for key, h in pairs(incr) do
  for field, v in pairs(h) do
    if v ~= 0 then redis.call('HINCRBY', key, field, string.format('%d', v)) end
  end
end
for key, members in pairs(sets) do
  local m = {}
  for w in pairs(members) do m[#m + 1] = w end
  redis.call('SADD', key, unpack(m))
end
for key, at in pairs(expat) do redis.call('EXPIREAT', key, at) end
return changed
`)
