# Cross toolchain for the aarch64 build of the numeric layer (scripts/test_aarch64.sh):
# Debian's g++-aarch64-linux-gnu, arm64 libraries from Debian multiarch (/usr/lib/aarch64-linux-gnu),
# binaries run under qemu-user.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
# find_package then looks in /usr/lib/aarch64-linux-gnu/cmake, never in the x86_64 one.
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
# Lets CMake (gtest_discover_tests, ctest) run the test binaries.
# No -L: the arm64 glibc of Debian multiarch (libc6:arm64, pulled in by the arm64 packages) is
# found at /lib/ld-linux-aarch64.so.1; with -L /usr/aarch64-linux-gnu (the cross toolchain's glibc)
# qemu-user 7.2 hangs in the first pthread_create.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64)
