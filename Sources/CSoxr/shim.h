// libsoxr (Debian: libsoxr-dev): high-quality sample-rate conversion.
#include <soxr.h>

// SOXR_HQ and SOXR_FLOAT32_I are plain macros; these make them visible to Swift.
static inline unsigned long crylab_soxr_hq(void) { return SOXR_HQ; }
static inline unsigned long crylab_soxr_vhq(void) { return SOXR_VHQ; }
