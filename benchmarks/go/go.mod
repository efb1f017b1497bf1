module fastrpcbench

go 1.19
