/* an i386 system call (int 0x80) from a 64-bit program: jailpy's seccomp filter kills it (verdict SV) */
int main(void) { long nr = 20; __asm__ volatile("int $0x80" : "+a"(nr)); return 0; }
