package projector

import goredis "github.com/redis/go-redis/v9"

// applyScript applies a batch in one round trip, atomically with the
// dedupe state, so a batch is counted wholly or not at all.
//
// KEYS[1] is the marker: without it the counters are being rebuilt and the
// script refuses the batch (returns -1) rather than count into a keyspace
// that is about to be swept.
//
// ARGV[1] is the key namespace, ARGV[2] and ARGV[3] the phase's TTL in
// seconds while open and once ended. Then one record per execution (the
// batch's events of it, merged by encode): eleven fields, execution id,
// user id, workflow id, queued seen ("1" or ""), started seen, terminal
// kind (""), duration in microseconds (""), histogram field ("h<i>"),
// finishing minute ("" outside the metrics horizon), that minute bucket's
// expiry (Unix seconds), the number of node transitions; then three fields
// per node transition: id, type, status. It returns the number of records
// that changed anything.
//
// Keys are built here from the namespace rather than passed in KEYS: the
// user of a rejected event is known only from the phase. On Redis
// Cluster, give the prefix a hash tag ("{weft}:") so every key shares a
// slot.
//
// Redis calls and Lua work are what a batch costs, so: one MGET of every
// phase in the batch, one SET per execution that changed; counter
// increments summed in Lua tables and
// written once per field at the end (a batch mostly touches a few users,
// so thousands of increments become tens of HINCRBYs).
var applyScript = goredis.NewScript(applySource)

const applySource = `
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local P, openTTL, doneTTL = ARGV[1], ARGV[2], ARGV[3]

local incr, sets, expat, ukeys = {}, {}, {}, {}
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

local changed = 0
local n = #ARGV

-- Every record's phase is one string, "user|workflow|q|s|t|,node,node,"
-- (the flags seen and the nodes counted), read for the whole batch in one
-- MGET: a call costs far more than a string on the embedded server.
local pkeys = {}
do
  local i = 4
  while i <= n do
    pkeys[#pkeys + 1] = P .. 'p:' .. ARGV[i]
    i = i + 11 + 3 * tonumber(ARGV[i + 10])
  end
end
local phases = {}
if #pkeys > 0 then phases = redis.call('MGET', unpack(pkeys)) end

local r, i = 0, 4
while i <= n do
  r = r + 1
  local ex, user, wf, qb, sb, tb = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local dus, hf, minute, mexp = ARGV[i + 6], ARGV[i + 7], ARGV[i + 8], ARGV[i + 9]
  local nn = tonumber(ARGV[i + 10])
  local first = i + 11
  i = first + 3 * nn

  local pk = pkeys[r]
  local f = {false, false, false, false, false}
  local counted = ','
  local old = phases[r]
  if old then
    local du, dw, dq, ds, dt, dn = string.match(old, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
    f[1] = (du ~= '' and du) or false
    f[2] = (dw ~= '' and dw) or false
    f[3] = (dq ~= '' and dq) or false
    f[4] = (ds ~= '' and ds) or false
    f[5] = (dt ~= '' and dt) or false
    counted = dn
  end
  for j = 0, nn - 1 do
    f[6 + j] = string.find(counted, ',' .. ARGV[first + 3 * j] .. ',', 1, true) and '1' or false
  end
  local u0, w0, q0, s0, t0 = f[1], f[2], f[3], f[4], f[5]
  local u1 = u0 or (user ~= '' and user)
  local w1 = w0 or (wf ~= '' and wf)
  local q1 = q0 or (qb ~= '' and qb)
  local s1 = s0 or (sb ~= '' and sb)
  local t1 = t0 or (tb ~= '' and tb)
  local dirty = (u1 and not u0) or (w1 and not w0) or (q1 and not q0) or (s1 and not s0) or (t1 and not t0)

  -- Without a user (a rejected event of an execution never seen) there is
  -- nobody to count for; the flags wait for an event that names the user.
  if u1 then
    local uk = ukeys[u1]
    if not uk then uk = P .. 'u:' .. u1; ukeys[u1] = uk end
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
    -- What was counted before (nothing if it had no user) and what is
    -- counted now: the gauges move by the difference.
    local g0 = u0 and phase(q0, s0, t0)
    local g1 = phase(q1, s1, t1)
    if g0 ~= g1 then
      if g0 == 'queued' or g0 == 'running' then add(uk, g0, -1) end
      if g1 == 'queued' or g1 == 'running' then add(uk, g1, 1) end
    end
    if t1 and not (u0 and t0) then
      add(uk, t1, 1)
      if wk then add(wk, t1, 1) end
      -- The duration and the minute belong to the event that ended it.
      if not t0 then
        if dus ~= '' then
          local d = tonumber(dus)
          add(uk, 'dsum', d); add(uk, 'dn', 1)
          if wk then add(wk, 'dsum', d); add(wk, 'dn', 1); add(wk, hf, 1) end
        end
        if minute ~= '' and t1 ~= 'rejected' then
          local mk = P .. 'm:' .. u1 .. ':' .. minute
          add(mk, 'n', 1); add(mk, t1, 1)
          if dus ~= '' then
            add(mk, 'dsum', tonumber(dus)); add(mk, 'dn', 1); add(mk, hf, 1)
          end
          expat[mk] = mexp
        end
      end
    end
    -- Each node is counted once per execution, whatever reports it again.
    for j = 0, nn - 1 do
      if not f[6 + j] then
        local b = first + 3 * j
        local nid, st = ARGV[b], ARGV[b + 2]
        if not string.find(counted, ',' .. nid .. ',', 1, true) then
          counted = counted .. nid .. ','
          dirty = true
          add(uk, 'ns:' .. st, 1)
          if st == 'completed' or st == 'failed' then
            add(uk, 'nodes', 1); add(uk, 'nt:' .. ARGV[b + 1], 1)
          end
        end
      end
    end
  end

  if dirty then
    changed = changed + 1
    local v = (u1 or '') .. '|' .. (w1 or '') .. '|' .. (q1 and '1' or '') .. '|' .. (s1 and '1' or '') .. '|' .. (t1 or '') .. '|' .. counted
    -- Kept for OpenTTL while open, DoneTTL once ended: longer than a
    -- redelivery or a late event of it may come.
    redis.call('SET', pk, v, 'EX', t1 and doneTTL or openTTL)
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
`
