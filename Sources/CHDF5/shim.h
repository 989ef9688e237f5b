// HDF5, serial build (Debian: libhdf5-dev). Many HDF5 "constants" are macros that expand to
// global variables after an H5open() call; Swift cannot import them, so each gets a shim.
#include <hdf5.h>

static inline hid_t crylab_h5p_default(void) { return H5P_DEFAULT; }
static inline hid_t crylab_h5s_all(void) { return H5S_ALL; }
static inline hid_t crylab_h5p_file_access(void) { H5open(); return H5P_FILE_ACCESS; }
static inline hid_t crylab_h5p_dataset_create(void) { H5open(); return H5P_DATASET_CREATE; }
static inline hid_t crylab_h5p_link_create(void) { H5open(); return H5P_LINK_CREATE; }
static inline hid_t crylab_h5t_native_float(void) { H5open(); return H5T_NATIVE_FLOAT; }
static inline hid_t crylab_h5t_native_double(void) { H5open(); return H5T_NATIVE_DOUBLE; }
static inline hid_t crylab_h5t_native_int32(void) { H5open(); return H5T_NATIVE_INT32; }
static inline hid_t crylab_h5t_native_int64(void) { H5open(); return H5T_NATIVE_INT64; }
static inline hid_t crylab_h5t_native_uint8(void) { H5open(); return H5T_NATIVE_UINT8; }
static inline hid_t crylab_h5t_c_s1(void) { H5open(); return H5T_C_S1; }
static inline hid_t crylab_h5t_ieee_f32le(void) { H5open(); return H5T_IEEE_F32LE; }
static inline hid_t crylab_h5t_ieee_f64le(void) { H5open(); return H5T_IEEE_F64LE; }
static inline hid_t crylab_h5t_std_i32le(void) { H5open(); return H5T_STD_I32LE; }
static inline hid_t crylab_h5t_std_i64le(void) { H5open(); return H5T_STD_I64LE; }
static inline hid_t crylab_h5t_std_u8le(void) { H5open(); return H5T_STD_U8LE; }
static inline hsize_t crylab_h5s_unlimited(void) { return H5S_UNLIMITED; }
static inline unsigned crylab_h5f_acc_rdonly(void) { return H5F_ACC_RDONLY; }
static inline unsigned crylab_h5f_acc_rdwr(void) { return H5F_ACC_RDWR; }
static inline unsigned crylab_h5f_acc_trunc(void) { return H5F_ACC_TRUNC; }
static inline size_t crylab_h5t_variable(void) { return H5T_VARIABLE; }

// Silence HDF5's own stderr error stack; CryLab reports errors itself, naming file and key.
static inline void crylab_h5_silence_errors(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }
