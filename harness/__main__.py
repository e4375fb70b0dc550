from si_bench.cli import main

main()
