/* The pod sandbox's process for the test node (hack/node-images.sh builds it static and imports it as
 * the sandbox image): it holds the pod's namespaces open, reaps orphans as PID 1 must, and exits on
 * SIGTERM or SIGINT so that a pod stops at once instead of after the runtime's kill timeout. Written
 * here because no registry can be reached for the usual pause image. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }

static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction on_stop = {.sa_handler = stop};
  struct sigaction on_child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
  sigaction(SIGTERM, &on_stop, NULL);
  sigaction(SIGINT, &on_stop, NULL);
  sigaction(SIGCHLD, &on_child, NULL);
  for (;;) pause();
  return EXIT_FAILURE;
}
