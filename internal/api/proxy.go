package api

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// ParseProxies parses trusted proxies given as addresses (192.0.2.7, ::1)
// or CIDR prefixes (10.0.0.0/8). It returns an error naming the first entry
// that is neither.
func ParseProxies(entries []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(entries))
	for _, e := range entries {
		if p, err := netip.ParsePrefix(e); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(e)
		if err != nil {
			return nil, fmt.Errorf("%q is not an address or CIDR prefix", e)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// RealClient returns middleware that sets r.RemoteAddr to the client a
// trusted proxy forwarded the request for, so that everything keyed or
// logged by client address (RequireBearer's limit on failed logins above
// all) sees the client rather than the proxy.
//
// Only a request whose TCP peer is one of trusted is changed. Its
// Forwarded header (RFC 7239), or else its X-Forwarded-For, is read from
// the right, skipping trusted proxies: the first other address is the
// client, since what is left of it was written by someone untrusted and
// may be forged. A request from a trusted peer that names no client, or
// names one in a form that is not an address ("unknown", an obfuscated
// name), keeps the address of the last trusted hop. Without trusted
// proxies the middleware changes nothing.
func RealClient(trusted []netip.Prefix) func(http.Handler) http.Handler {
	isTrusted := func(a netip.Addr) bool {
		for _, p := range trusted {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	return func(next http.Handler) http.Handler {
		if len(trusted) == 0 {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			peer, ok := remoteAddr(r.RemoteAddr)
			if ok && isTrusted(peer) {
				client := peer
				hops := forwardedFor(r.Header)
				for i := len(hops) - 1; i >= 0; i-- {
					a, ok := hopAddr(hops[i])
					if !ok {
						break
					}
					client = a
					if !isTrusted(a) {
						break
					}
				}
				if client != peer {
					r2 := *r
					r2.RemoteAddr = netip.AddrPortFrom(client, 0).String()
					r = &r2
				}
			}
			next.ServeHTTP(w, r)
		})
	}
}

// remoteAddr parses a RemoteAddr ("ip:port").
func remoteAddr(s string) (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	a, err := netip.ParseAddr(s)
	return a.Unmap(), err == nil
}

// forwardedFor returns the chain of client addresses the request's
// proxies reported, nearest last: the for= values of Forwarded when
// present, X-Forwarded-For otherwise.
func forwardedFor(h http.Header) []string {
	var hops []string
	for _, v := range h.Values("Forwarded") {
		for elem := range strings.SplitSeq(v, ",") {
			for pair := range strings.SplitSeq(elem, ";") {
				k, val, ok := strings.Cut(strings.TrimSpace(pair), "=")
				if ok && strings.EqualFold(k, "for") {
					hops = append(hops, strings.Trim(val, `"`))
				}
			}
		}
	}
	if len(hops) > 0 {
		return hops
	}
	for _, v := range h.Values("X-Forwarded-For") {
		for hop := range strings.SplitSeq(v, ",") {
			hops = append(hops, strings.TrimSpace(hop))
		}
	}
	return hops
}

// hopAddr parses one hop: an address, with or without a port, IPv6 in
// brackets or not.
func hopAddr(s string) (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	if host, _, err := net.SplitHostPort(s); err == nil {
		s = host
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	return a.Unmap(), err == nil
}
