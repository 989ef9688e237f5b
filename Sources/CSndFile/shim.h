// libsndfile (Debian: libsndfile1-dev): WAV, FLAC, OGG, AIFF decoding.
#include <sndfile.h>
