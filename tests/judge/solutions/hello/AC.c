#include <stdio.h>
int main(void) { char w[64]; scanf("%63s", w); printf("hello, %s\n", w); return 0; }
