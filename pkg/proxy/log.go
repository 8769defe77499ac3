package proxy

// sanitize makes a device id safe to log: printable ASCII only, bounded.
func sanitize(s string) string {
	const maxLen = 64
	if clean(s, maxLen) {
		return s // the common case: nothing to copy
	}
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

func clean(s string, maxLen int) bool {
	if len(s) > maxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
