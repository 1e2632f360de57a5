#include <stdio.h>
int main(void) { int n; scanf("%d", &n); printf("%d %d\n", n, 1); return 0; }
