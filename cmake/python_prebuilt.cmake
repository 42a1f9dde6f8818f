# The wheel from an existing build tree (FP4KIT_PREBUILT_DIR, configured with -DFP4KIT_PYTHON=ON
# and built): installs its fp4kit executable and fp4kit._core extension, compiles nothing. The
# extension must match the Python that runs pip (its file name carries the ABI tag); anything
# missing is an error naming the file, never a wheel without it.
find_package(Python 3.10 REQUIRED COMPONENTS Interpreter Development.Module)
get_filename_component(prebuilt "${FP4KIT_PREBUILT_DIR}" ABSOLUTE BASE_DIR "${CMAKE_SOURCE_DIR}")
set(ext "${prebuilt}/python/fp4kit/_core.${Python_SOABI}${CMAKE_SHARED_MODULE_SUFFIX}")
set(stub "${prebuilt}/python/fp4kit/_core.pyi")
set(exe "${prebuilt}/fp4kit")
foreach(f IN ITEMS "${ext}" "${stub}" "${exe}")
  if(NOT EXISTS "${f}")
    message(FATAL_ERROR "FP4KIT_PREBUILT_DIR: ${f} does not exist (build ${prebuilt} with "
                        "-DFP4KIT_PYTHON=ON and the targets fp4kit and _core_stub, with the "
                        "Python that runs pip: ${Python_EXECUTABLE})")
  endif()
endforeach()
install(FILES "${ext}" "${stub}" DESTINATION fp4kit)
install(PROGRAMS "${exe}" DESTINATION "${SKBUILD_SCRIPTS_DIR}")
