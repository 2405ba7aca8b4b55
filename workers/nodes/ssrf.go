package nodes

import (
	"net/netip"
	"strconv"
	"strings"
	"syscall"
)

// The SSRF guard decides which addresses HTTP_REQUEST may connect to. It runs
// where the decision cannot be dodged: in the dialer's Control hook, on the IP
// the socket is about to connect to, after DNS. A host name that resolves to
// 127.0.0.1, a DNS answer that changes between a check and the dial
// (rebinding), and a redirect to an internal address all meet the same check.
// Literal hosts are also checked before the request, and on every redirect,
// so the refusal is immediate and reads well.

// addrPolicy is one range and why it is refused.
type addrPolicy struct {
	prefix netip.Prefix
	reason string
}

var (
	// metadataAddrs serve cloud credentials to whoever asks from the host, so
	// they are refused even when private addresses are allowed.
	metadataAddrs = []netip.Addr{
		netip.MustParseAddr("169.254.169.254"), // AWS, GCP, Azure, OpenStack, ...
		netip.MustParseAddr("fd00:ec2::254"),   // AWS over IPv6
		netip.MustParseAddr("100.100.100.200"), // Alibaba Cloud
	}
	// neverPrefixes hold no legitimate remote server: 0.0.0.0 connects to the
	// host itself on Linux, and the others are not unicast destinations.
	neverPrefixes = []addrPolicy{
		{netip.MustParsePrefix("0.0.0.0/8"), "an unspecified (\"this host\") address"},
		{netip.MustParsePrefix("::/128"), "an unspecified (\"this host\") address"},
		{netip.MustParsePrefix("224.0.0.0/4"), "a multicast address"},
		{netip.MustParsePrefix("ff00::/8"), "a multicast address"},
		{netip.MustParsePrefix("240.0.0.0/4"), "a reserved address"}, // includes 255.255.255.255
	}
	// privatePrefixes reach the host or its network; WEFT_HTTP_ALLOW_PRIVATE
	// lets them through for self-hosted setups calling their own services.
	privatePrefixes = []addrPolicy{
		{netip.MustParsePrefix("127.0.0.0/8"), "a loopback address"},
		{netip.MustParsePrefix("::1/128"), "a loopback address"},
		{netip.MustParsePrefix("10.0.0.0/8"), "a private address"},
		{netip.MustParsePrefix("172.16.0.0/12"), "a private address"},
		{netip.MustParsePrefix("192.168.0.0/16"), "a private address"},
		{netip.MustParsePrefix("100.64.0.0/10"), "a shared (CGNAT) address"},
		{netip.MustParsePrefix("169.254.0.0/16"), "a link-local address"},
		{netip.MustParsePrefix("fe80::/10"), "a link-local address"},
		{netip.MustParsePrefix("fc00::/7"), "a unique-local address"},
		{netip.MustParsePrefix("fec0::/10"), "a site-local address"},
		{netip.MustParsePrefix("198.18.0.0/15"), "a benchmarking address"},
		{netip.MustParsePrefix("192.0.0.0/24"), "an IETF protocol address"},
	}
	// Ranges of IPv6 that carry an IPv4 address inside; the IPv4 address is
	// checked too, since a translator on the path may deliver to it.
	ipv4Compatible = netip.MustParsePrefix("::/96")
	nat64          = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour      = netip.MustParsePrefix("2002::/16")
)

// blockedAddrError is the guard's refusal. It names the kind of address but
// not the address, so a workflow cannot use it to map internal DNS.
type blockedAddrError struct{ reason string }

func (e *blockedAddrError) Error() string {
	return "the address is " + e.reason + ", which HTTP_REQUEST may not call"
}

// checkAddr refuses an address HTTP_REQUEST must not connect to. IPv4-mapped
// IPv6 (::ffff:127.0.0.1) is judged as the IPv4 address it stands for.
func checkAddr(ip netip.Addr, allowPrivate bool) error {
	if !ip.IsValid() {
		return &blockedAddrError{"not a valid IP address"}
	}
	ip = ip.WithZone("").Unmap()
	for _, m := range metadataAddrs {
		if ip == m {
			return &blockedAddrError{"a cloud metadata address"}
		}
	}
	for _, p := range neverPrefixes {
		if p.prefix.Contains(ip) {
			return &blockedAddrError{p.reason}
		}
	}
	if !allowPrivate {
		for _, p := range privatePrefixes {
			if p.prefix.Contains(ip) {
				return &blockedAddrError{p.reason}
			}
		}
	}
	if ip.Is6() && !ip.IsLoopback() { // ::1 is in ::/96 but means itself
		b := ip.As16()
		var v4 [4]byte
		switch {
		case ipv4Compatible.Contains(ip), nat64.Contains(ip):
			copy(v4[:], b[12:16])
		case sixToFour.Contains(ip):
			copy(v4[:], b[2:6])
		default:
			return nil
		}
		return checkAddr(netip.AddrFrom4(v4), allowPrivate)
	}
	return nil
}

// hostIP returns the IP a URL host stands for without DNS: an IP literal, or
// one of the legacy IPv4 spellings (2130706433, 0x7f000001, 0177.0.0.1,
// 127.1) that C resolvers accept and Go's do not. Treating them as IPs here
// makes the outcome independent of which resolver the binary uses.
func hostIP(host string) (netip.Addr, bool) {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip, true
	}
	return parseLegacyIPv4(host)
}

// parseLegacyIPv4 parses host the way inet_aton(3) does: one to four parts,
// each decimal, octal (leading 0) or hex (leading 0x), the last part filling
// the bytes left.
func parseLegacyIPv4(host string) (netip.Addr, bool) {
	host = strings.TrimSuffix(host, ".")
	if host == "" {
		return netip.Addr{}, false
	}
	parts := strings.Split(host, ".")
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	vals := make([]uint64, len(parts))
	for i, p := range parts {
		if p == "" {
			return netip.Addr{}, false
		}
		base, digits := 10, p
		switch {
		case len(p) > 1 && (p[:2] == "0x" || p[:2] == "0X"):
			base, digits = 16, p[2:]
		case len(p) > 1 && p[0] == '0':
			base, digits = 8, p[1:]
		}
		if digits == "" {
			continue // "0x" alone is 0 to inet_aton
		}
		v, err := strconv.ParseUint(digits, base, 32)
		if err != nil {
			return netip.Addr{}, false
		}
		vals[i] = v
	}
	n := len(vals)
	var ip uint64
	for i, v := range vals[:n-1] {
		if v > 0xff {
			return netip.Addr{}, false
		}
		ip |= v << (24 - 8*i)
	}
	last := vals[n-1]
	if last >= 1<<(8*(5-n)) {
		return netip.Addr{}, false
	}
	ip |= last
	return netip.AddrFrom4([4]byte{byte(ip >> 24), byte(ip >> 16), byte(ip >> 8), byte(ip)}), true
}

// dialControl is a net.Dialer Control hook refusing the address the socket
// is about to connect to; address is always a resolved "ip:port" here.
func dialControl(check func(netip.Addr) error) func(network, address string, _ syscall.RawConn) error {
	return func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return &blockedAddrError{"not a resolved IP address"}
		}
		return check(ap.Addr())
	}
}
