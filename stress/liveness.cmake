# Liveness under kills (stress/liveness_test.c): a survivor blocked in
# portal_doorbell_wait with no timeout while its peer process is SIGKILLed
# (OS lock, pidfd) or SIGSTOPped (heartbeat) at random moments; then a
# restart with a new epoch and the fencing of the old incarnation. The
# program is its own peer (it re-execs /proc/self/exe). Prints the
# detection times as "liveness: method=... detect_p50_us=... p99_us=...".
# PORTAL_LIVENESS_KILLS sets the kills per case (default 100 for the lock, 60
# for the heartbeat, whose every kill costs a 150 ms stall). About 30 s.
add_executable(test_portal_liveness liveness_test.c)
target_link_libraries(test_portal_liveness PRIVATE portal_internal PkgConfig::CMOCKA)
stress_add_test(NAME portal.process.liveness COMMAND test_portal_liveness TIMEOUT 120)
