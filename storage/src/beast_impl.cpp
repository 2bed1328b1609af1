// Asio and Beast compiled once (BOOST_*_SEPARATE_COMPILATION): saves ~20 s per TU that uses them.
#include <boost/asio/impl/src.hpp>
#include <boost/beast/src.hpp>
#include <boost/asio/ssl/impl/src.hpp>
