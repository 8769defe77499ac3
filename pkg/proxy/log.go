package proxy

// sanitize makes a device id safe to log: printable ASCII only, bounded.
func sanitize(s string) string {
	const maxLen = 64
	b := make([]byte, 0, min(len(s), maxLen+3))
	for i := 0; i < len(s); i++ {
		if len(b) >= maxLen {
			return string(b) + "..."
		}
		ch := s[i]
		if ch < 0x20 || ch > 0x7e {
			ch = '?'
		}
		b = append(b, ch)
	}
	return string(b)
}
