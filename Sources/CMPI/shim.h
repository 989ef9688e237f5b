// Open MPI 4.1 (Debian: libopenmpi-dev). Open MPI's handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM,
// MPI_ERRORS_RETURN, ...) are macros that take the address of a library global, and MPI_IN_PLACE
// is a cast integer: Swift imports none of them, so each one CryLab uses gets a shim here.
#include <mpi.h>

static inline MPI_Comm crylab_mpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Comm crylab_mpi_comm_null(void) { return MPI_COMM_NULL; }
static inline MPI_Datatype crylab_mpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype crylab_mpi_byte(void) { return MPI_BYTE; }
static inline MPI_Datatype crylab_mpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype crylab_mpi_uint64(void) { return MPI_UINT64_T; }
static inline MPI_Op crylab_mpi_sum(void) { return MPI_SUM; }
static inline MPI_Errhandler crylab_mpi_errors_return(void) { return MPI_ERRORS_RETURN; }
static inline MPI_Info crylab_mpi_info_null(void) { return MPI_INFO_NULL; }
static inline MPI_Request crylab_mpi_request_null(void) { return MPI_REQUEST_NULL; }
static inline void *crylab_mpi_in_place(void) { return MPI_IN_PLACE; }
static inline MPI_Status *crylab_mpi_status_ignore(void) { return MPI_STATUS_IGNORE; }
static inline int crylab_mpi_any_source(void) { return MPI_ANY_SOURCE; }
static inline int crylab_mpi_any_tag(void) { return MPI_ANY_TAG; }
static inline int crylab_mpi_thread_serialized(void) { return MPI_THREAD_SERIALIZED; }
static inline int crylab_mpi_comm_type_shared(void) { return MPI_COMM_TYPE_SHARED; }
static inline int crylab_mpi_success(void) { return MPI_SUCCESS; }
static inline int crylab_mpi_max_error_string(void) { return MPI_MAX_ERROR_STRING; }
static inline int crylab_mpi_max_processor_name(void) { return MPI_MAX_PROCESSOR_NAME; }
