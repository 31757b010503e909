# Installs the connpool build tree at CONNPOOL_BINARY_DIR into a fresh PREFIX
# (run by the consumer.install test with cmake -P).
foreach(var IN ITEMS CONNPOOL_BINARY_DIR PREFIX)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "install.cmake: pass -D${var}=...")
  endif()
endforeach()

file(REMOVE_RECURSE "${PREFIX}")

execute_process(
  COMMAND "${CMAKE_COMMAND}" --install "${CONNPOOL_BINARY_DIR}" --prefix "${PREFIX}"
  RESULT_VARIABLE result)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "cmake --install failed: ${result}")
endif()

# The install must be self-contained: the core headers and the package config,
# found where find_package(connpool) looks for them.
file(GLOB_RECURSE config_files "${PREFIX}/*/connpoolConfig.cmake")
if(NOT config_files)
  message(FATAL_ERROR "no connpoolConfig.cmake under ${PREFIX}")
endif()
if(NOT EXISTS "${PREFIX}/include/connpool.hpp")
  message(FATAL_ERROR "${PREFIX}/include/connpool.hpp was not installed")
endif()
