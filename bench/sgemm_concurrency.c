// Single-threaded OpenBLAS sgemm of an expert's gate_up shape (512 x 1536 x 2048), on 1, 8 and 16
// threads at once: GFLOP/s per thread (bench/cpu_device_run.sh; OPENBLAS_VERBOSE=2 prints the kernels).
// Build: gcc -O2 bench/sgemm_concurrency.c -o sgemm_concurrency -I/usr/include/x86_64-linux-gnu/openblas-pthread -lopenblas -lpthread
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
#include <time.h>
void openblas_set_num_threads(int);
static double now(void){struct timespec t; clock_gettime(CLOCK_MONOTONIC,&t); return t.tv_sec+1e-9*t.tv_nsec;}
int M=512,N=1536,K=2048,IT=10; float *a,*b;
void* run(void*p){ float*c=malloc((size_t)M*N*4);
 cblas_sgemm(CblasRowMajor,CblasNoTrans,CblasTrans,M,N,K,1,a,K,b,K,0,c,N);
 double t0=now(); for(int it=0;it<IT;it++) cblas_sgemm(CblasRowMajor,CblasNoTrans,CblasTrans,M,N,K,1,a,K,b,K,0,c,N);
 *(double*)p=2.0*M*N*K*IT/(now()-t0)/1e9; free(c); return 0;}
int main(int argc,char**argv){ openblas_set_num_threads(1);
 a=malloc((size_t)M*K*4),b=malloc((size_t)N*K*4);
 for(long i=0;i<(long)M*K;i++)a[i]=(i%7)*0.1f;for(long i=0;i<(long)N*K;i++)b[i]=(i%5)*0.1f;
 int ths[]={1,8,16};
 for(int j=0;j<3;j++){int n=ths[j]; pthread_t t[64]; double g[64]; for(int i=0;i<n;i++)pthread_create(&t[i],0,run,&g[i]); double s=0; for(int i=0;i<n;i++){pthread_join(t[i],0); s+=g[i];}
  printf("openblas sgemm %dx%dx%d single-threaded, %2d at once: %.1f GFLOP/s per thread\n",M,N,K,n,s/n);}
}
