#pragma once

// Kill tests run their victim as a child: this test binary again, with a few variables added to
// its environment; the child's work starts before main when it finds them (a static initialiser
// of the test file), and `--gtest_list_tests` keeps GoogleTest from running anything if it ever
// got there. The environment is built before fork, so the child calls nothing but execve.

#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>
#include <vector>

extern char** environ;

namespace connpool::testing {

/// Starts this binary again with `added` ("NAME=value" each) in front of this process's
/// environment. Returns the child's pid, or -1 when fork failed.
inline pid_t spawn_self(const std::vector<std::string>& added) {
    std::vector<std::string> strings(added);
    for (char** e = environ; *e != nullptr; ++e) strings.emplace_back(*e);
    std::vector<char*> env;
    for (auto& s : strings) env.push_back(s.data());
    env.push_back(nullptr);
    char list[] = "--gtest_list_tests";
    char self[] = "/proc/self/exe";
    char* argv[] = {self, list, nullptr};
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::execve(self, argv, env.data());
        std::_Exit(127);
    }
    return pid;
}

/// SIGKILLs the child `pid` (it may have ended already) and returns its wait status.
inline int kill_and_reap(pid_t pid) {
    ::kill(pid, SIGKILL);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return status;
}

} // namespace connpool::testing
