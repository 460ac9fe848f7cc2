package pathling

import (
	"context"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// checkExportURL applies Pathling 2.x's policy on exportUrl, in its order: the allowlist, the
// plain-http refusal, then the internal-address check. Errors are *inputError.
func (e *Emulator) checkExportURL(ctx context.Context, exportURL string) error {
	if len(e.cfg.AllowableExportURLs) == 0 {
		return inputErrorf("No trusted export URLs are configured. " +
			"Set pathling.import.pnp.allowableExportUrls to enable $import-pnp.")
	}
	if !allowlistMatches(e.cfg.AllowableExportURLs, exportURL) {
		return inputErrorf("exportUrl not in allowableExportUrls: %s", exportURL)
	}
	u, err := url.Parse(exportURL)
	if err != nil {
		return inputErrorf("Invalid exportUrl: %s", exportURL)
	}
	if !e.cfg.AllowInsecureURLs && strings.EqualFold(u.Scheme, "http") {
		// The exact wording of this message is not in the Pathling sources we could read;
		// it names the setting that lifts the restriction.
		return inputErrorf("exportUrl must use https (set pathling.allowInsecureUrls to allow http): %s", exportURL)
	}
	if !e.cfg.AllowInternalURLs {
		host := u.Hostname()
		if host == "" {
			return inputErrorf("exportUrl must contain a host: %s", exportURL)
		}
		if resolvesInternal(ctx, host) {
			return inputErrorf("exportUrl points to an internal address: %s", host)
		}
	}
	return nil
}

// allowlistMatches reproduces Pathling's UrlAllowlist: for http(s) prefixes, same scheme, host
// (case-insensitive), effective port, no userinfo, and a path equal to the prefix's or extending
// it at a "/" boundary. Other schemes fall back to a plain string prefix.
func allowlistMatches(prefixes []string, candidate string) bool {
	for _, p := range prefixes {
		if allowlistEntryMatches(p, candidate) {
			return true
		}
	}
	return false
}

func allowlistEntryMatches(prefix, candidate string) bool {
	if i := strings.Index(prefix, "://"); i > 0 && i == len(prefix)-3 {
		// A bare scheme ("s3://") admits everything on it, except http(s).
		scheme := strings.ToLower(prefix[:i])
		if isHTTPScheme(scheme) {
			return false
		}
		return strings.HasPrefix(strings.ToLower(candidate), scheme+"://")
	}
	pu, err := url.Parse(prefix)
	if err != nil || pu.Scheme == "" {
		return false
	}
	if !isHTTPScheme(pu.Scheme) {
		return strings.HasPrefix(candidate, prefix)
	}
	cu, err := url.Parse(candidate)
	if err != nil || cu.User != nil {
		return false
	}
	if !strings.EqualFold(pu.Scheme, cu.Scheme) {
		return false
	}
	if pu.Hostname() == "" || !strings.EqualFold(pu.Hostname(), cu.Hostname()) {
		return false
	}
	if effectivePort(pu) != effectivePort(cu) {
		return false
	}
	pp, cp := normalisePath(pu.Path), normalisePath(cu.Path)
	return pp == "" || cp == pp || strings.HasPrefix(cp, pp+"/")
}

func isHTTPScheme(s string) bool {
	s = strings.ToLower(s)
	return s == "http" || s == "https"
}

func effectivePort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	switch strings.ToLower(u.Scheme) {
	case "http":
		return "80"
	case "https":
		return "443"
	}
	return ""
}

func normalisePath(p string) string {
	if p == "" || p == "/" {
		return ""
	}
	return strings.TrimSuffix(p, "/")
}

// resolvesInternal reports whether host is, or resolves to, a loopback, private, link-local,
// unspecified or IPv6 unique-local address. A host that cannot be resolved is let through, as
// Pathling does (the connection fails later).
func resolvesInternal(ctx context.Context, host string) bool {
	if addr, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return isInternalAddr(addr)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if isInternalAddr(a) {
			return true
		}
	}
	return false
}

func isInternalAddr(a netip.Addr) bool {
	a = a.Unmap()
	// IsPrivate covers 10/8, 172.16/12, 192.168/16 and fc00::/7 (Java's isSiteLocalAddress
	// plus Pathling's explicit unique-local check).
	return a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsUnspecified()
}
