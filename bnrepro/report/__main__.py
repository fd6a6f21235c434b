from bnrepro.report.cli import main

main()
