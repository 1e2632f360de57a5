#include <vector>
#include <cstdio>
int main() {
    std::vector<char*> v;
    for (int i = 0; i < 64; i++) { char *p = new char[16 << 20]; for (int j = 0; j < (16 << 20); j += 4096) p[j] = 1; v.push_back(p); }
    std::printf("%zu\n", v.size());
}
