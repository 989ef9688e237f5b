// oneDNN C API (Debian: libdnnl-dev), used for convolutions.
#include <dnnl.h>
