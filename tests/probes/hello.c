/* hello.c: a C hello world for the seccomp runtime tests (built dynamic and -static). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    char *buf = malloc(1 << 20);            /* a large allocation: mmap, not brk */
    if (buf == NULL)
        return 1;
    memset(buf, 'x', 1 << 20);
    printf("hello from C, %d args, %c\n", argc - 1, buf[12345]);
    free(buf);
    return 0;
}
