# Links the consumers' `app` to the monitor components (monitor_use.cpp): connpool::monitor, and
# connpool::monitor_http when there, which it must be when the build that made connpool had it
# (CONNPOOL_EXPECT_MONITOR_HTTP).
target_sources(app PRIVATE "${CMAKE_CURRENT_LIST_DIR}/monitor_use.cpp")
target_link_libraries(app PRIVATE connpool::monitor)
if(TARGET connpool::monitor_http)
  target_link_libraries(app PRIVATE connpool::monitor_http)
  target_compile_definitions(app PRIVATE CONSUMER_MONITOR_HTTP)
elseif(CONNPOOL_EXPECT_MONITOR_HTTP)
  message(FATAL_ERROR "connpool::monitor_http was built by connpool but is missing here")
endif()
