// hello.cpp: a C++ hello world for the seccomp runtime tests (built dynamic and -static).
#include <iostream>
#include <numeric>
#include <string>
#include <vector>

int main() {
    std::vector<int> v(1000);
    std::iota(v.begin(), v.end(), 1);
    std::string s = "hello from C++, sum " + std::to_string(std::accumulate(v.begin(), v.end(), 0));
    std::cout << s << std::endl;
    return 0;
}
