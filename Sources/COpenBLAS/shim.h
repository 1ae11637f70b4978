#include <cblas.h>
// glibc's allocator controls: the tensor engine keeps freed buffers in the process (see BLAS.setThreads).
#include <malloc.h>
// LAPACK, as OpenBLAS ships it (Fortran calling convention: every argument by pointer, column-major).
// Cholesky solve of a symmetric positive-definite system A X = B.
void dposv_(const char *uplo, const int *n, const int *nrhs, double *a, const int *lda, double *b, const int *ldb, int *info);
