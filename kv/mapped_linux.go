//go:build linux

package kv

import "syscall"

// dropMapping unmaps the pages of [addr, addr+size) from the page tables
// (MADV_DONTNEED). On a shared file mapping the data is not lost: the next
// access maps the page-cache page again.
func dropMapping(addr uintptr, size int64) error {
	if addr == 0 || size <= 0 {
		return nil
	}
	if _, _, e := syscall.Syscall(syscall.SYS_MADVISE, addr, uintptr(size), syscall.MADV_DONTNEED); e != 0 {
		return e
	}
	return nil
}
