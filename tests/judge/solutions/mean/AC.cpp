#include <cstdio>
int main() { int n; std::scanf("%d", &n); double s = 0; for (int i = 0; i < n; i++) { double x; std::scanf("%lf", &x); s += x; } std::printf("%.9f\n", s / n); }
