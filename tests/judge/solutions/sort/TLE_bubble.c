#include <stdio.h>
static long long v[200000];
int main(void) { int n; scanf("%d", &n); for (int i = 0; i < n; i++) scanf("%lld", &v[i]);
  for (int i = 0; i < n; i++) for (int j = 0; j + 1 < n - i; j++) if (v[j] > v[j+1]) { long long t = v[j]; v[j] = v[j+1]; v[j+1] = t; }
  for (int i = 0; i < n; i++) printf("%lld ", v[i]); printf("\n"); return 0; }
