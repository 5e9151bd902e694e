/* bench/seccomp-build.c: how long libseccomp takes to build berth's default
 * allow-list into BPF, for 1, 2 and 3 architectures (x86_64; + x86; + x32),
 * with and without the binary-tree optimization: the part of a container
 * start the default profile adds in the runtime (libcontainer and runc both
 * build the filter with libseccomp). The names come from default.json:
 *
 *   python3 - <<'PY' > /tmp/names.h
 *   import json
 *   p = json.load(open("crates/berth-core/src/seccomp/default.json"))
 *   n = [x for r in p["syscalls"] if r["action"] == "SCMP_ACT_ALLOW"
 *        and not ({"args", "includes", "excludes"} & r.keys()) for x in r["names"]]
 *   print("static const char *NAMES[] = {" + ",".join('"%s"' % x for x in n) + "};")
 *   PY
 *   gcc -O2 -I/tmp -o /tmp/seccomp-build bench/seccomp-build.c -lseccomp && /tmp/seccomp-build
 */
#include <seccomp.h>
#include <stdio.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>
#include "names.h"
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e3+t.tv_nsec/1e6;}
static double build(int arches, int optimize){
  double t0=now();
  scmp_filter_ctx c=seccomp_init(SCMP_ACT_ERRNO(1));
  if(arches>1){seccomp_arch_add(c,SCMP_ARCH_X86);} if(arches>2){seccomp_arch_add(c,SCMP_ARCH_X32);}
  if(optimize) seccomp_attr_set(c,SCMP_FLTATR_CTL_OPTIMIZE,2);
  for(unsigned i=0;i<sizeof(NAMES)/sizeof(*NAMES);i++){int n=seccomp_syscall_resolve_name(NAMES[i]); if(n!=__NR_SCMP_ERROR) seccomp_rule_add(c,SCMP_ACT_ALLOW,n,0);}
  int fd=open("/dev/null",O_WRONLY); seccomp_export_bpf(c,fd); close(fd);
  seccomp_release(c); return now()-t0;}
int main(){for(int a=1;a<=3;a++)for(int o=0;o<=1;o++){double best=1e9;for(int k=0;k<5;k++){double d=build(a,o);if(d<best)best=d;}printf("arches=%d optimize=%d: %.2f ms\n",a,o,best);}}
