// hello.go: a Go hello world for the seccomp runtime tests (built with CGO_ENABLED=0: Go's own
// runtime makes the system calls, without libc; goroutines run on several threads).
package main

import (
	"fmt"
	"runtime"
	"sync"
)

func main() {
	runtime.GOMAXPROCS(2)
	var wg sync.WaitGroup
	sums := make([]int, 4)
	for i := range sums {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j <= 1000*(i+1); j++ {
				sums[i] += j
			}
		}(i)
	}
	wg.Wait()
	fmt.Println("hello from Go,", sums[0]+sums[1]+sums[2]+sums[3])
}
