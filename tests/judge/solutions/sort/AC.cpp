#include <algorithm>
#include <cstdio>
#include <vector>
int main() { int n; std::scanf("%d", &n); std::vector<long long> v(n); for (auto &x : v) std::scanf("%lld", &x); std::sort(v.begin(), v.end()); for (int i = 0; i < n; i++) std::printf("%lld%c", v[i], i + 1 < n ? ' ' : '\n'); }
