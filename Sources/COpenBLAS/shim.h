#include <cblas.h>
// glibc's allocator controls: the tensor engine keeps freed buffers in the process (see BLAS.setThreads).
#include <malloc.h>
