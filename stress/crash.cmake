# stress/crash.cmake - the crash-injection harness (docs/crash-injection.md),
# included by stress/CMakeLists.txt.
#
#   portal_crash       the driver: regions, rings, the ledger, SIGKILL at
#                      random moments and named points, restarts, the check
#   portal_crash_peer  one producer or consumer incarnation
#
# portal.crash.short runs in the default test run (label process, a few
# hundred injections); portal.crash.full is 10^4 injections (label stress,
# excluded from the default run). PORTAL_CRASH_INJECTIONS overrides the count.
# Both detect deaths through the liveness watch (--detect watch, the
# default; a DEAD verdict that the process contradicts is an error);
# portal.crash.short.pidfd keeps the driver's own pidfd path tested.
# Not stress_add_test: its skip regex would match the per-case
# "skipped: recovery API not available" notes; a whole run that cannot go
# ahead exits 77 instead.
add_executable(portal_crash_peer crash_peer.c)
target_link_libraries(portal_crash_peer PRIVATE portal_internal)

add_executable(portal_crash crash_driver.c driver.c)
target_link_libraries(portal_crash PRIVATE portal_internal)
add_dependencies(portal_crash portal_crash_peer)

function(crash_add_test name injections label timeout)
  add_test(NAME ${name} COMMAND portal_crash --injections ${injections} ${ARGN})
  set_tests_properties(${name} PROPERTIES LABELS ${label} TIMEOUT ${timeout} RUN_SERIAL TRUE
    ENVIRONMENT "PORTAL_TEST_BINDIR=${PROJECT_BINARY_DIR}/bin"
    SKIP_RETURN_CODE 77)
endfunction()

crash_add_test(portal.crash.short 500 process 300)
crash_add_test(portal.crash.short.pidfd 100 process 120 --detect pidfd)
crash_add_test(portal.crash.full 10000 stress 7200)

# The harness's own check: consumers that drop or duplicate one message in
# 997 must be caught: the overall line must show them (the exit status is
# then 1; a pass regex ignores it, and would not match a run that failed for
# another reason).
add_test(NAME portal.crash.selftest.lose
  COMMAND portal_crash --injections 40 --kinds spsc,msg --sabotage lose)
add_test(NAME portal.crash.selftest.dup
  COMMAND portal_crash --injections 40 --kinds spsc,msg --sabotage dup)
set_tests_properties(portal.crash.selftest.lose PROPERTIES
  PASS_REGULAR_EXPRESSION "crash: kind=all [^\n]* lost=[1-9][0-9]* duplicated=0 hangs=0 errors=0")
set_tests_properties(portal.crash.selftest.dup PROPERTIES
  PASS_REGULAR_EXPRESSION "crash: kind=all [^\n]* lost=0 duplicated=[1-9][0-9]* hangs=0 errors=0")
set_tests_properties(portal.crash.selftest.lose portal.crash.selftest.dup PROPERTIES
  LABELS process TIMEOUT 120 RUN_SERIAL TRUE
  ENVIRONMENT "PORTAL_TEST_BINDIR=${PROJECT_BINARY_DIR}/bin")
